"""ssmc.ir: the typed, immutable SSM graph, its op set, symbolic rules and passes."""
from .builder import Builder
from .graph import Graph, Node, Rebuilder, format_node, prune, verify
from .indexmap import IndexMap, grid_order
from .opset import ALL_OPS, OPS, IRError, OpSpec
from .spec import Spec
from .symbolic import RULES, Rule, get_rule, rule
from .types import DEFAULT_ROLES, ROLES, Axis, ValueType

__all__ = ["Builder", "Graph", "Node", "Rebuilder", "format_node", "prune", "verify", "IndexMap", "grid_order",
           "ALL_OPS", "OPS", "IRError", "OpSpec", "Spec", "RULES", "Rule", "get_rule", "rule", "DEFAULT_ROLES",
           "ROLES", "Axis", "ValueType"]
