"""A local AWS stand-in for ssm-deploy: moto in server mode, with Run Command that really runs.

``StandIn`` starts moto on 127.0.0.1, patches SSM so each invocation runs its script in a local
process per instance (see ``agent.py``), and seeds instances, roles, KMS keys and parameters. Each
instance is a host of its own: a network namespace with its private IP (``hosts.py``), a PID
namespace, so its /proc lists its processes only (``pid_namespace.py``; ``StandIn.host_pid`` finds
them from outside), and one mount namespace shared by all its commands, with its own /home, /root,
/tmp, /srv and /opt (``isolation.py``; ``StandIn.instance_path`` finds those files from outside);
``users.py`` gives every instance ``ssmdeploy-app``, the second user for RUN_AS, with Node.js 20 and
pm2 on its login PATH (``tools.py``). ELBv2 target groups have target health from real HTTP health
checks (``load_balancer.py``) and a real HTTP load balancer, one HAProxy per group (``haproxy.py``);
``load_generator.py`` sends real traffic through it; ``instance_app.py`` runs the users' app on an
instance outside pm2. SendCommand's CloudWatch alarm stops a rollout (``command_alarm.py``).
"""

from standin.standin import StandIn

__all__ = ["StandIn"]
