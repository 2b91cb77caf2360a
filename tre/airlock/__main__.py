"""``python -m tre.airlock`` prints the request lifecycle as Mermaid (docs/reference/airlock-states.md embeds it)."""

from tre.airlock import mermaid_diagram

print(mermaid_diagram(), end="")
