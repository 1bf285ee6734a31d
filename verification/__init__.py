"""Every check a MedGround sample must pass, each stage with its own reason codes.

Stages (one module each, composed by ``pipeline`` in the configured order, cheapest first):
``format`` (JSON Schemas, query bounds), ``geometry`` (box/mask, spatial/size/count words, leaks),
``priors`` (laterality, plausibility, labelled structures, relations), ``ambiguity`` (one region only),
``judge`` (a VLM via ``builder.vlm``, or the model-free ``evidence`` check).
Entry point: ``verification.pipeline.run_verification(queries_dir, out_dir, settings)``.
"""

from verification.pipeline import run_verification
from verification.report import VerificationReport
from verification.settings import VerificationSettings
from verification.verdict import Verdict

__all__ = ["Verdict", "VerificationReport", "VerificationSettings", "run_verification"]
