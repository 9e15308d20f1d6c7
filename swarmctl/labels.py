"""The labels swarmctl and docker's stack tools write on swarm objects, and read back.

docker's (``com.docker.stack.*``) make ``docker stack ls/ps/rm`` work on swarmctl stacks and the
other way round; swarmctl's own live under ``io.swarmctl.``. Everything that writes a label
(compose conversion) and everything that reads one (facts, checks, rollouts) uses these names.
"""

NAMESPACE = "com.docker.stack.namespace"  # the stack an object belongs to
IMAGE = "com.docker.stack.image"  # a service's image as its stack file wrote it
DIGEST = "io.swarmctl.digest"  # a keyed hash of a secret's data: swarm never returns secret data
SECRET = "io.swarmctl.secret"  # on a content-versioned (encrypted) secret: its name in the stack file
CHECK = "io.swarmctl.check"  # x-swarmctl.check: the application check of verify and of rollout gates
PORT = "io.swarmctl.port"  # x-swarmctl.port
STANDALONE = "io.swarmctl.standalone"  # x-swarmctl.standalone: "true" for brokers declared not to form a cluster
GROUP = "io.swarmctl.rollout.group"  # x-swarmctl.rollout.group
ORDER = "io.swarmctl.rollout.order"  # x-swarmctl.rollout.order
PROBE = "io.swarmctl.probe"  # on verify's probe containers, so a crashed run's leftovers are found
HISTORY_STACK = "io.swarmctl.history.stack"  # on a revision's config (ops.history): the stack it records
HISTORY_REVISION = "io.swarmctl.history.revision"  # and its number
GENERATED_STACK = "io.swarmctl.generated.stack"  # on a generated variable's config (ops.generated): its stack
GENERATED_VARIABLE = "io.swarmctl.generated.variable"  # and the variable it holds
