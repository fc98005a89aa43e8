"""Privacy audits: what an attacker can recover from what leaves a node.

The gradient-inversion audit simulates an observer of a node's update (the update itself,
a DP-SGD update, or the secure aggregate of several nodes; an honest coordinator or one
that sends crafted weights), attacks it with DLG, iDLG, Inverting Gradients, or the
analytic and learned-prior attacks, and scores the reconstructions against the originals
and against a prior (the dataset's mean image)::

    from primia.audit import AttackConfig, InversionConfig, run_inversion_audit

    run = run_inversion_audit(InversionConfig(
        data=Path("data/synth"), model="lenet", image_size=32,
        attack=AttackConfig(name=AttackName.IG, iterations=1000),
        defenses=("none", "dp", "secagg"), out=Path("audit"),
    ))
    print(run.audits[0].summary.verdict)
"""

from primia.audit.attacks import AttackConfig, AttackName
from primia.audit.inversion import InversionConfig, InversionRun, run_inversion_audit
from primia.audit.release import Defense, UpdateRule
from primia.audit.results import InversionAudit, Summary
from primia.audit.threats import Threat

__all__ = [
    "AttackConfig",
    "AttackName",
    "Defense",
    "InversionAudit",
    "InversionConfig",
    "InversionRun",
    "Summary",
    "Threat",
    "UpdateRule",
    "run_inversion_audit",
]
