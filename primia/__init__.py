"""primia: privacy-preserving deep learning on medical images held by several institutions.

Images stay where they are. Models train at each institution with differentially private
SGD; updates are combined by secure aggregation; trained models answer on encrypted inputs;
audits measure what an attacker could still recover.
"""

__version__ = "0.1.0"
