"""A local AWS stand-in for ssm-deploy: moto in server mode, with Run Command that really runs.

``StandIn`` starts moto on 127.0.0.1, patches SSM so each invocation runs its script in a local
process per instance (see ``agent.py``), and seeds instances, roles, KMS keys and parameters.
Each invocation runs in a mount namespace of its own where the instance's folder holds /srv and
/opt (``isolation.py``; ``StandIn.instance_path`` finds those files from outside); ``users.py``
creates ``ssmdeploy-app``, the instances' second user for RUN_AS. ELBv2 target groups get target
health from health checks of each instance's app (``load_balancer.py``, traffic in ``traffic.py``);
SendCommand's CloudWatch alarm stops a rollout (``command_alarm.py``).
"""

from standin.standin import StandIn

__all__ = ["StandIn"]
