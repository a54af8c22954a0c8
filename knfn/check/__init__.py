"""`knfn check`: each function against the twelve factors, pass, warn or fail per factor.

Static checks read the function's source (``ast``), its requirements (``packaging``) and its
manifests; measured checks start it as a replica and watch it start, answer and stop. See
model.py for what a verdict is and run.py for how the parts fit.
"""

from knfn.check.model import FACTORS, CheckError, Verdict, failed
from knfn.check.run import CheckOptions, UnknownServices, check

__all__ = ["FACTORS", "CheckError", "CheckOptions", "UnknownServices", "Verdict", "check", "failed"]
