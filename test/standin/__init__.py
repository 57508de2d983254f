"""A local AWS stand-in for ssm-deploy: moto in server mode, with Run Command that really runs.

``StandIn`` starts moto on 127.0.0.1, patches SSM so each invocation runs its script in a local
process per instance (see ``agent.py``), and seeds instances, roles, KMS keys and parameters.
"""

from standin.standin import StandIn

__all__ = ["StandIn"]
