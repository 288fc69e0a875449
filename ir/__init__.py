"""ssmc.ir: the typed, immutable SSM graph, its op set, symbolic rules and passes."""
from .graph import Graph, Node, Rebuilder, format_node, prune, verify
from .ops import ELEMENTWISE, OPS, IRError, OpSpec
from .symbolic import RULES, Rule, get_rule, rule
from .types import DEFAULT_ROLES, ROLES, Axis, ValueType

__all__ = ["Graph", "Node", "Rebuilder", "format_node", "prune", "verify", "ELEMENTWISE", "OPS",
           "IRError", "OpSpec", "RULES", "Rule", "get_rule", "rule", "DEFAULT_ROLES", "ROLES",
           "Axis", "ValueType"]
