"""Rehearsal of the paper protocol: miniature real-layout datasets + random upstream-format weights, then the
whole ``paper`` pipeline under ``dvc repro`` with only its lengths shortened (``profiles/rehearse.yaml``)::

    python -m ifer.rehearsal write --root .rehearsal/root     # datasets/ and weights/ only
    python -m ifer.rehearsal run --scratch .rehearsal          # write + dvc repro in .rehearsal/work (nox -s rehearse)

The numbers it produces mean nothing (random weights, synthetic faces); what it proves is that every stage
of the published protocol runs on the real on-disk layouts and the real weight formats.
"""
