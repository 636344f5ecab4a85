"""The ``dhm embed`` and ``dhm search`` commands (parsers and what they run; the work is imported when a command
runs, so that the CLI starts fast)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import DHMError

CHECKPOINT_HELP = "best.pt, last.pt, deploy.pt or a pt/safetensors export of a re-ID run"


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``embed`` and ``search`` to the CLI's subcommands."""
    p = sub.add_parser(
        "embed",
        help="embed a gallery once into an index file (re-ID)",
        description="L2-normalised embeddings (the post-BN embedding of the deployed model) of every image (files "
        "or folders, searched recursively) with CHECKPOINT, streamed in batches, written as a gallery index "
        "(.safetensors: embeddings, image paths, the identities and cameras of Market-style names, the model's "
        "fingerprint and the embedding settings) that dhm search reads without embedding the gallery again.",
    )
    p.add_argument("checkpoint", help=CHECKPOINT_HELP)
    p.add_argument("images", nargs="+", help="image files or folders (searched recursively)")
    p.add_argument("--output", "-o", required=True, help="the index file to write (.safetensors)")
    p.add_argument("--flip", action="store_true", help="average with the mirrored image's embedding")
    p.add_argument(
        "--dtype", choices=("float16", "float32"), default="float16", help="stored precision (default float16)"
    )
    p.add_argument("--append", action="store_true", help="add the images not yet in the existing OUTPUT index")
    p.add_argument("--batch", type=int, default=256, help="images decoded and embedded at a time (default 256)")
    p.add_argument(
        "--approximate",
        action="store_true",
        help="also build the approximate FAISS index (OUTPUT with suffix .faiss) for dhm search --approximate",
    )
    p.set_defaults(fn=cmd_embed)

    p = sub.add_parser(
        "search",
        help="rank a gallery for each query image with a trained re-ID model",
        description="The top-k gallery images nearest to each QUERY image by cosine distance of the embeddings, "
        "nearest first. The gallery is an index file written by dhm embed (searched without embedding it again; "
        "made with another model or other settings, it is refused) or image folders (embedded now).",
    )
    p.add_argument("checkpoint", help=CHECKPOINT_HELP)
    p.add_argument("queries", nargs="+", help="query image files or folders")
    p.add_argument("--gallery", required=True, action="append", help="an index file, or gallery folders (repeatable)")
    p.add_argument("--top-k", type=int, default=10, help="gallery images shown per query (default 10)")
    p.add_argument("--flip", action="store_true", help="average with the mirrored image's embedding")
    p.add_argument("--json", action="store_true", help="print the results as JSON (for scripts)")
    p.add_argument(
        "--approximate",
        action="store_true",
        help="approximate search (FAISS; the .faiss file dhm embed --approximate wrote, else built now)",
    )
    p.add_argument(
        "--nprobe",
        type=int,
        help="lists the approximate inverted file searches (galleries of 200,000 images and more; default 16%% of "
        "them, 640 at a million images): "
        "more is slower and finds more (BENCHMARKS.md, Gallery search)",
    )
    p.add_argument("--show", metavar="PNG", help="also draw each query and its ranked gallery images into PNG")
    p.set_defaults(fn=cmd_search)


def cmd_embed(ns: argparse.Namespace) -> int:
    from ..deployed import load_deployed
    from ..files import refuse_input_as_output
    from .build import build_index, settings_of
    from .images import list_images
    from .index import GalleryIndex
    from .search import sidecar, write_approximate

    out = Path(ns.output)
    files = list_images(ns.images)
    refuse_input_as_output(out, [Path(ns.checkpoint), *files], "dhm embed")
    if out.suffix != ".safetensors":
        raise DHMError(f"a gallery index is written as .safetensors, got {out.name}")
    if ns.batch < 1:
        raise DHMError(f"--batch must be >= 1, got {ns.batch}")
    deployed = load_deployed(ns.checkpoint)
    if ns.append:
        if not out.is_file():
            raise DHMError(f"--append adds to an existing index: {out} does not exist")
        index = GalleryIndex.load(out)
        index.check(settings_of(deployed, ns.flip), "the images to append")
        known = set(index.paths)
        new = [f for f in files if str(f.resolve()) not in known]
        if new:
            index = index.extend(build_index(deployed, new, flip=ns.flip, dtype=ns.dtype, batch=ns.batch))
        added, skipped = len(new), len(files) - len(new)
    else:
        index = build_index(deployed, files, flip=ns.flip, dtype=ns.dtype, batch=ns.batch)
        added, skipped = len(files), 0
    index.save(out)
    note = f" ({added:,} added, {skipped:,} already in it)" if ns.append else ""
    print(f"{out}: {len(index):,} embeddings of {index.embeddings.shape[1]} values{note}")
    if ns.approximate or sidecar(out).is_file():  # an approximate index is kept in step with its index
        print(f"{write_approximate(index, out)}: the approximate index of {len(index):,} images")
    return 0


def cmd_search(ns: argparse.Namespace) -> int:
    from ..deployed import load_deployed
    from .build import names_of
    from .search import search
    from .show import draw_ranks

    if ns.top_k < 1:
        raise DHMError(f"--top-k must be >= 1, got {ns.top_k}")
    deployed = load_deployed(ns.checkpoint)
    results = search(deployed, ns.gallery, ns.queries, ns.top_k, ns.flip, ns.approximate, ns.nprobe)
    if ns.show:
        _, height, width = deployed.input_size
        ids = names_of([q for q, _ in results])[0].tolist()
        print(
            f"{draw_ranks(results, ns.show, ids, aspect=width / height)}: {len(results)} queries drawn", file=sys.stderr
        )
    if ns.json:
        rows = [{"query": str(q), "matches": [m.__dict__ for m in matches]} for q, matches in results]
        print(json.dumps(rows, indent=1))
        return 0
    for query, matches in results:
        print(f"{query}:")
        for rank, match in enumerate(matches, 1):
            print(f"  {rank:>3}. {match.distance:.4f}  {match.path}")
    return 0
