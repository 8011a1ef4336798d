"""Every module imports on its own in a fresh interpreter (catches circular imports that test order hides)."""
import pkgutil
import subprocess
import sys
from pathlib import Path

import ifer

ROOT = Path(__file__).resolve().parents[1]


def test_each_module_imports_first():
    names = sorted(m.name for m in pkgutil.walk_packages(ifer.__path__, "ifer.") if not m.name.endswith("__main__"))
    script = ("import importlib, sys\nbad = []\nfor n in sys.argv[1:]:\n"
              "    for k in [k for k in sys.modules if k.startswith('ifer')]: del sys.modules[k]\n"
              "    try: importlib.import_module(n)\n"
              "    except Exception as e: bad.append(f'{n}: {type(e).__name__}: {e}')\n"
              "print('\\n'.join(bad)); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", script, *names], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    assert len(names) > 40
