"""Static SVG of the report page: training-curve sparklines and the best architecture's graph.

The graph is the architecture's ONNX model (built from its string with the study's
grammar and exported, or read from a given ``best.onnx``) with constants and static
shape plumbing folded away (``einnas.surrogate.summary.analyse_graph``, the view the
predictor reads). Layers are networkx topological generations, top to bottom; a layer
wider than the page is split into rows, and a deep graph is wrapped into side-by-side
columns, so that the drawing stays a page wide (text at its size) and about one screen
high for 10-200 nodes. Hovering a node shows its op, name and
output shape (SVG ``<title>``).
"""

from __future__ import annotations

import hashlib
import html
import math

NODE_W, NODE_H, GAP_X, GAP_Y, COL_GAP = 96, 22, 8, 14, 24
MAX_ROWS = 28  # layers per column before the drawing wraps into another column
MAX_WIDTH = 1040  # the page's content width (px): more columns only while they fit
MAX_NODES = 600  # larger graphs are not drawn (a drawing of them would not be readable)


def sparkline(curve, width: int = 110, height: int = 26) -> str:
    """A small SVG of a training curve (validation accuracy per epoch, y from 0 to 1)."""
    values = [v for v in curve or [] if isinstance(v, (int, float)) and math.isfinite(v)]
    if not values:
        return '<span class="note">-</span>'
    n = len(values)
    xs = [2 + (width - 4) * (i / (n - 1) if n > 1 else 0.5) for i in range(n)]
    ys = [height - 2 - (height - 4) * min(1.0, max(0.0, v)) for v in values]
    points = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys))
    label = html.escape(", ".join(f"{100 * v:.1f}%" for v in values))
    return (f'<svg class="spark" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">'
            f"<title>validation accuracy per epoch: {label}</title>"
            f'<line x1="0" y1="2" x2="{width}" y2="2" class="ref"/>'
            f'<polyline points="{points}"/><circle cx="{xs[-1]:.1f}" cy="{ys[-1]:.1f}" r="2"/></svg>')


def graph_section(study, best: dict | None, *, grammar=None, onnx_path=None) -> str:
    """The HTML of the best architecture's drawing, or a note saying why there is none."""
    from einnas.errors import EinnasError

    esc = html.escape
    if best is None or not best.get("arch"):
        return '<p class="note">no completed trial yet</p>'
    head = (f'<p>trial {best["trial"]}, archid <span class="archid">{esc(str(best["archid"]))}</span></p>'
            f'<p><code class="arch">{esc(best["arch"])}</code></p>')
    try:
        model = _model(study, best, grammar, onnx_path)
        return head + graph_svg(model)
    except EinnasError as error:
        return head + f'<p class="note">no graph drawing: {esc(str(error))}</p>'


def _model(study, best: dict, grammar, onnx_path):
    """The ONNX model to draw: ``onnx_path`` when it holds this archid, else built from the string."""
    from einnas.errors import ArchitectureError
    from einnas.search.records import CONFIG_ATTR

    if onnx_path is not None:
        from einnas.surrogate.onnx_io import read_model

        model = read_model(str(onnx_path))
        if {p.key: p.value for p in model.metadata_props}.get("archid") == best["archid"]:
            return model
    settings = study.user_attrs.get(CONFIG_ATTR) or {}
    shape, classes = settings.get("input_shape"), settings.get("num_classes")
    if not (isinstance(shape, list) and shape and all(isinstance(d, int) and d > 0 for d in shape)
            and isinstance(classes, int) and classes > 0):
        raise ArchitectureError("the study records no input shape and number of classes")
    from einnas.grammar import build_network, load_grammar, parse_arch, space_for_sha256
    from einnas.grammar.export import export_onnx

    if grammar is None:
        space = space_for_sha256(str(settings.get("grammar_sha256")))
        if space is None:
            raise ArchitectureError("the study's grammar is not a built-in space; give --grammar FILE "
                                    "(and --plugin) to draw its graph")
        grammar = load_grammar(space)
    arch = parse_arch(best["arch"], grammar)
    return export_onnx(build_network(arch, tuple(shape), classes), tuple(shape), classes)


def _hue(op: str) -> int:
    """A stable colour per op type, so the same op looks the same in every drawing."""
    return int(hashlib.blake2b(op.encode(), digest_size=2).hexdigest(), 16) % 360


def _layout(layers: list[list[int]]) -> tuple[dict, int, int]:
    """Positions of the node boxes' top-left corners, and the drawing's width and height.

    Columns hold up to ``rows`` consecutive layers; ``rows`` is the least that keeps
    the drawing within MAX_WIDTH, and at most MAX_ROWS unless one column must hold more.
    """
    def widths(rows):
        cols = [layers[i:i + rows] for i in range(0, len(layers), rows)]
        return cols, [max(len(layer) for layer in col) * (NODE_W + GAP_X) for col in cols]

    rows = min(MAX_ROWS, len(layers))
    cols, ws = widths(rows)
    while sum(ws) + COL_GAP * (len(ws) - 1) > MAX_WIDTH and rows < len(layers):
        rows = min(len(layers), rows + max(1, rows // 4))
        cols, ws = widths(rows)
    pos, left = {}, 0
    for col, w in zip(cols, ws):
        for r, layer in enumerate(col):
            start = left + (w - len(layer) * (NODE_W + GAP_X)) / 2 + GAP_X / 2
            for k, node in enumerate(layer):
                pos[node] = (start + k * (NODE_W + GAP_X), 8 + r * (NODE_H + GAP_Y))
        left += w + COL_GAP
    height = 16 + rows * (NODE_H + GAP_Y)
    return pos, max(1, int(left - COL_GAP)), height


def graph_svg(model) -> str:
    """An SVG drawing of an ONNX model's data graph (constants and shape plumbing folded)."""
    import networkx as nx

    from einnas.surrogate.summary import analyse_graph

    esc = html.escape
    graph = analyse_graph(model)
    dag = graph.dag
    if dag.number_of_nodes() == 0:
        return '<p class="note">the graph has no data nodes</p>'
    if dag.number_of_nodes() > MAX_NODES:
        return (f'<p class="note">{dag.number_of_nodes()} nodes: too many to draw readably '
                f"(at most {MAX_NODES}); export it and open it in an ONNX viewer</p>")
    generations = [sorted(layer) for layer in nx.topological_generations(dag)]
    # order each layer by the mean position of its parents: fewer crossing edges
    order: dict[int, float] = {}
    for layer in generations:
        layer.sort(key=lambda n: (sum(order[p] for p in dag.predecessors(n)) / max(1, dag.in_degree(n)), n))
        order.update({n: i for i, n in enumerate(layer)})
    # a generation wider than the page is drawn as several rows (its nodes do not feed each other)
    per_row = max(1, MAX_WIDTH // (NODE_W + GAP_X))
    layers = [layer[i:i + per_row] for layer in generations for i in range(0, len(layer), per_row)]
    pos, width, height = _layout(layers)
    edges = []
    for a, b in dag.edges():
        (xa, ya), (xb, yb) = pos[a], pos[b]
        x1, y1, x2, y2 = xa + NODE_W / 2, ya + NODE_H, xb + NODE_W / 2, yb
        bend = max(10.0, abs(y2 - y1) / 2) if y2 > y1 else 40.0
        edges.append(f'<path d="M{x1:.0f},{y1:.0f} C{x1:.0f},{y1 + bend:.0f} {x2:.0f},{y2 - bend:.0f} '
                     f'{x2:.0f},{y2:.0f}"/>')
    boxes = []
    for n in dag.nodes():
        node = graph.nodes[n]
        x, y = pos[n]
        shape = next((graph.tensors[o].shape for o in node.outputs if o in graph.tensors), None)
        shown = "x".join("?" if d is None else str(d) for d in shape) if shape else "?"
        label = node.op if len(node.op) <= 13 else node.op[:12] + "…"
        boxes.append(
            f'<g class="node" data-op="{esc(node.op)}"><title>{esc(node.op)} {esc(node.proto.name)}\n'
            f"output {esc(shown)}</title>"
            f'<rect x="{x:.0f}" y="{y:.0f}" width="{NODE_W}" height="{NODE_H}" rx="4" '
            f'style="fill:hsl({_hue(node.op)},60%,88%)"/>'
            f'<text x="{x + NODE_W / 2:.0f}" y="{y + NODE_H / 2 + 4:.0f}">{esc(label)}</text></g>')
    return (f'<p class="note">ONNX graph: {dag.number_of_nodes()} nodes, {dag.number_of_edges()} edges, '
            f"{len(generations)} layers (constants and shape plumbing folded; hover a node for its output shape).</p>"
            f'<div class="graph"><svg id="graph" viewBox="0 0 {width} {height}" width="{min(width, MAX_WIDTH)}" '
            f'data-nodes="{dag.number_of_nodes()}" data-edges="{dag.number_of_edges()}" role="img">'
            f'<g class="edges">{"".join(edges)}</g>{"".join(boxes)}</svg></div>')
