"""Names of the fabric's actors: what a person sees on the Ray dashboard."""

NAMESPACE = "novacron"
CONTROLLER = "fabric/controller"
LEDGER = "fabric/ledger"
PLACEMENT = "fabric/placement"


def node_actor(node: str) -> str:
    """The actor name of fabric node `node` (e.g. fabric/node/us-east-1)."""
    return f"fabric/node/{node}"
