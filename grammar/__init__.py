"""The einspace search space: grammar file, sampler, parser, op registry, builder.

Example::

    from einnas.grammar import load_grammar, sample, build_network

    grammar = load_grammar()                       # the built-in einspace.lark
    arch = sample(grammar, 1, seed=0, input_shape=(3, 32, 32))[0]
    print(arch.string, arch.archid, arch.info.params)
    net = build_network(arch, (3, 32, 32), num_classes=10)
"""

from einnas.grammar.builder import build_module, build_network
from einnas.grammar.pcfg import DEFAULT_GRAMMAR, Grammar, grammar_from_text, load_grammar, resolve_grammar, space_names
from einnas.grammar.registry import IMAGE, REGISTRY, TOKENS, OpSpec, State, register_fusion, register_op
from einnas.grammar.sampler import Limits, mutate, sample, sample_one
from einnas.grammar.seeds import SEED_NAMES, resolve_arch, seed_text
from einnas.grammar.tree import ArchInfo, Architecture, Node, analyse, archid_of, parse_arch, to_string


def default_grammar() -> Grammar:
    """The built-in einspace grammar (loaded once per process)."""
    return load_grammar()


__all__ = [
    "DEFAULT_GRAMMAR", "IMAGE", "REGISTRY", "SEED_NAMES", "TOKENS", "ArchInfo", "Architecture", "Grammar",
    "Limits", "Node", "OpSpec", "State", "analyse", "archid_of", "build_module", "build_network",
    "default_grammar", "grammar_from_text", "load_grammar", "mutate", "resolve_grammar", "space_names", "parse_arch", "register_fusion",
    "register_op", "resolve_arch", "sample", "sample_one", "seed_text", "to_string",
]
