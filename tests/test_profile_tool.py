"""tools/profile_run.py: the test command's profile holds per-test seconds and the rehearsal's per-stage seconds,
read from the JUnit file pytest-xdist writes (the property a test records on a worker reaches the file).

    python -m pytest tests/test_profile_tool.py -q
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_profile_reads_per_test_times_and_recorded_stage_times_under_xdist(tmp_path):
    (tmp_path / "test_fake.py").write_text(
        "import json, time\n"
        "def test_pole(record_property):\n"
        "    time.sleep(0.2)\n"
        "    record_property('rehearsal_stage_s', json.dumps({'data': 1.5, 'train_fer@x': 9.0}))\n"
        "def test_other():\n"
        "    pass\n")
    junit, out = tmp_path / "j.xml", tmp_path / "profile.json"
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "profile_run.py"), "--out", str(out), "--pytest-junit",
                        str(junit), "--", sys.executable, "-m", "pytest", "-q", "-n", "2", "-p", "no:cacheprovider",
                        f"--junitxml={junit}", str(tmp_path / "test_fake.py")],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    prof = json.loads(out.read_text())
    assert set(prof["tests"]) == {"test_fake::test_pole", "test_fake::test_other"}
    assert prof["tests"]["test_fake::test_pole"] >= 0.2
    assert prof["rehearsal_stages"] == {"test_fake::test_pole": {"train_fer@x": 9.0, "data": 1.5}}
    assert list(prof["rehearsal_stages"]["test_fake::test_pole"]) == ["train_fer@x", "data"]  # longest first
    assert prof["cpu_peak"]["fp32"]["tflops"] > 0 and prof["machine"]["isa_flags"]
