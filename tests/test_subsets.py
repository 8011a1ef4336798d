"""Published test subsets given as image lists (``analysis.subsets``, ``ifer.data.subsets``)::

    .venv/bin/python -m pytest tests/test_subsets.py -q

RAN's lists name RAF-DB images as the label file does (``test_0002.jpg``; the aligned file is
``test_0002_aligned.jpg``), FERPlus by file name, AffectNet by ``<folder>/<sha1>.jpg``; the matcher must find
each, count what it cannot match, refuse an ambiguous name and say in one line when nothing matches.
"""
import hashlib

import pytest

from ifer.data.subsets import SubsetError, match_subset, normalised_name, read_list

RAF = [f"/d/rafdb/Image/aligned/test_{i:04d}_aligned.jpg" for i in range(1, 8)]


def test_rafdb_names_match_the_aligned_files_and_unmatched_names_are_counted(tmp_path):
    lst = tmp_path / "occlusion_list.txt"
    lst.write_text("# occlusion\ntest_0002.jpg 3\n\ntest_0005.jpg\ntest_0002.jpg\ntrain_00001.jpg\n")
    idx, info = match_subset(lst, RAF, "rafdb")
    assert idx == [1, 4]
    assert info["n_listed"] == 3 and info["n_matched"] == 2 and info["unmatched_examples"] == ["train_00001.jpg"]
    assert info["sha256"] == hashlib.sha256(lst.read_bytes()).hexdigest()


def test_affectnet_paths_and_ambiguous_stems(tmp_path):
    recs = ["/a/Manually_Annotated_Images/12/abc.jpg", "/a/Manually_Annotated_Images/40/abc.jpg",
            "/a/Manually_Annotated_Images/7/def.jpg"]
    lst = tmp_path / "pose.txt"
    lst.write_text("40/abc.jpg\ndef.jpg\nabc.jpg\n")  # the bare name is ambiguous: two folders hold abc.jpg
    idx, info = match_subset(lst, recs, "affectnet7")
    assert idx == [1, 2] and info["unmatched_examples"] == ["abc.jpg"]


def test_bad_lists_fail_in_one_line(tmp_path):
    with pytest.raises(SubsetError, match="no such file"):
        read_list(tmp_path / "missing.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n\n")
    with pytest.raises(SubsetError, match="no image names"):
        read_list(empty)
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("fer0032220.png\n")
    with pytest.raises(SubsetError, match="none of its 1 names .* is a test image of rafdb") as e:
        match_subset(wrong, RAF, "rafdb")
    assert "\n" not in str(e.value)


def test_normalised_name():
    assert normalised_name("Image\\aligned\\Test_0003_aligned.JPG") == "test_0003"
    assert normalised_name("12/abc.jpg") == "abc"


def test_the_rehearsal_lists_match_the_real_layout_adapters(tmp_path):
    """The lists the rehearsal writes (RAN's formats) against the RAF-DB and AffectNet adapters' test records:
    every test name matches, the train name and AffectNet's contempt row (not in AffectNet-7) do not."""
    from ifer.data import open_dataset
    from ifer.rehearsal.datasets import SUBSET_LISTS, write_affectnet, write_rafdb, write_subset_lists

    write_rafdb(tmp_path)
    write_affectnet(tmp_path)
    lists = write_subset_lists(tmp_path)
    raf = open_dataset("rafdb", tmp_path / "rafdb", split="test")
    idx, info = match_subset(lists[SUBSET_LISTS[0]], [r.path for r in raf.records], "rafdb")
    assert info["n_listed"] == 4 and info["n_matched"] == 3 and info["unmatched_examples"] == ["train_00001.jpg"]
    assert all(raf.records[i].path.name.endswith("_aligned.jpg") for i in idx)
    aff = open_dataset("affectnet", tmp_path / "affectnet", split="test", num_classes=7)
    idx, info = match_subset(lists[SUBSET_LISTS[1]], [r.path for r in aff.records], "affectnet7")
    assert info["n_matched"] >= 3 and info["n_matched"] + info["n_unmatched"] == info["n_listed"]
