"""Re-ID deployment on real PKU images: a tiny pku-reid run, then ``dhm eval`` (the retrieval table), ``dhm embed``
(embeddings equal to the model's own post-BN output, L2-normalised), ``dhm search`` (a ranked gallery, the query
never its own match) and the ONNX export (output ``embedding``, the normalisation in its metadata)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from conftest import SHARED_DATA

from dhm.cli import main
from dhm.deployed import load_deployed
from dhm.predict import load_images

PKU = SHARED_DATA / "pku-reid-subset"
pytestmark = [pytest.mark.skipif(not PKU.is_dir(), reason=f"{PKU} is not here"), pytest.mark.slow]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pku")
    overrides = [
        f"data.root={PKU}",
        "model.widths=[8,16,32]",
        "data.options.test_ids=8",
        "train.epochs=1",
        "train.limit_batches=2",
        "train.progress=false",
        "loss.mode=dhm",
        f"train.out_dir={out}",
    ]
    assert main(["train", "pku-reid", *overrides]) == 0
    return out


def test_eval_prints_the_retrieval_table(run, capsys):
    capsys.readouterr()
    assert main(["eval", str(run / "best.pt"), "--heads"]) == 0
    out = capsys.readouterr().out
    assert "head" in out and "rank-1" in out and "mINP" in out
    assert all(f"\n{h} " in out for h in ("main", "head1", "head2", "concat"))
    assert main(["eval", str(run / "deploy.pt"), "--flip", "--rerank"]) == 0
    assert "\nmain " in capsys.readouterr().out


def test_flip_and_rerank_change_the_evaluation_of_the_same_model(run):
    from dhm.engine import evaluate_checkpoint

    plain = evaluate_checkpoint(run / "deploy.pt").splits["test"]
    flipped = evaluate_checkpoint(run / "deploy.pt", options={"flip": True}).splits["test"]
    ranked = evaluate_checkpoint(run / "deploy.pt", options={"rerank": True}).splits["test"]
    assert plain["mAP/main"] != flipped["mAP/main"] and plain["mAP/main"] != ranked["mAP/main"]
    assert all(0 <= r["rank1/main"] <= 100 for r in (plain, flipped, ranked))


def test_embed_writes_the_models_own_normalised_embeddings(run, tmp_path, capsys):
    pytest.importorskip("safetensors")
    from dhm.gallery import GalleryIndex

    folder = PKU / "train" / "001"
    target = tmp_path / "feats.safetensors"
    argv = ["embed", str(run / "deploy.pt"), str(folder), "-o", str(target), "--dtype", "float32", "--batch", "5"]
    assert main(argv) == 0  # 16 images in batches of 5: streamed
    assert "16 embeddings of 32 values" in capsys.readouterr().out
    index = GalleryIndex.load(target)
    assert index.embeddings.shape == (16, 32) and [p.split("/")[-1] for p in index.paths][:2] == [
        "01_1.png",
        "01_2.png",
    ]
    deployed = load_deployed(run / "deploy.pt")
    _, images = load_images([folder], deployed.input_size)
    x = (images.float() / 255 - torch.tensor(deployed.mean).view(1, 3, 1, 1)) / torch.tensor(deployed.std).view(
        1, 3, 1, 1
    )
    with torch.no_grad():
        torch.testing.assert_close(index.embeddings, F.normalize(deployed.model(x), dim=1), atol=1e-5, rtol=1e-4)
    assert main(["embed", str(run / "deploy.pt"), str(folder), "-o", str(tmp_path / "f.txt")]) == 2


def test_a_gallery_embedded_once_is_searched_as_the_folder_and_updated(run, tmp_path, capsys):
    """dhm search on the index ranks as on the folder (no embedding of the gallery); --append adds what is new; an
    index made with other settings is refused in one line; --json for scripts."""
    gallery, extra = PKU / "val" / "all_imgs" / "004", PKU / "val" / "all_imgs" / "012"
    query = gallery / "01_1.png"
    index = tmp_path / "gallery.safetensors"
    assert main(["embed", str(run / "best.pt"), str(gallery), "-o", str(index), "--dtype", "float32"]) == 0
    capsys.readouterr()
    base = ["search", str(run / "best.pt"), str(query), "--top-k", "4"]
    assert main([*base, "--gallery", str(gallery)]) == 0
    by_folder = capsys.readouterr().out
    assert main([*base, "--gallery", str(index)]) == 0
    assert capsys.readouterr().out == by_folder  # both print the resolved gallery paths
    assert main(["embed", str(run / "best.pt"), str(gallery), str(extra), "-o", str(index), "--append"]) == 0
    added = len(list(extra.iterdir()))
    assert f"({added:,} added, {len(list(gallery.iterdir())):,} already in it)" in capsys.readouterr().out
    assert main([*base, "--gallery", str(index), "--flip"]) == 2
    err = capsys.readouterr().err
    assert "flip True against False" in err and len(err.strip().splitlines()) == 1
    assert main([*base, "--gallery", str(index), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["query"] == str(query) and len(rows[0]["matches"]) == 4
    assert all(m["path"] != str(query.resolve()) for m in rows[0]["matches"])


def test_an_output_that_names_an_input_is_refused_and_the_input_kept(run, tmp_path, capsys):
    """dhm embed -o / dhm export -o naming the checkpoint (or an image) read by the same command would destroy it."""
    import shutil

    copy = tmp_path / "deploy.pt"
    shutil.copy(run / "deploy.pt", copy)
    before = copy.read_bytes()
    capsys.readouterr()
    assert main(["embed", str(copy), str(PKU / "train" / "001"), "-o", str(copy)]) == 2
    assert "is an input of this command" in capsys.readouterr().err
    assert main(["export", str(copy), "--format", "pt", "-o", str(copy)]) == 2
    assert "is an input of this command" in capsys.readouterr().err
    assert copy.read_bytes() == before


def test_search_ranks_the_gallery_for_each_query(run, capsys):
    gallery = PKU / "val" / "all_imgs"
    query = gallery / "004" / "01_1.png"
    capsys.readouterr()
    assert main(["search", str(run / "best.pt"), str(query), "--gallery", str(gallery), "--top-k", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{query}:" and len(lines) == 4
    distances = [float(line.split()[1]) for line in lines[1:]]
    assert distances == sorted(distances) and all(0 <= d <= 2 for d in distances)
    assert all(str(query) not in line for line in lines[1:])  # never its own match


def test_a_classifier_is_refused_by_embed(tmp_path, capsys):
    assert main(["train", "smoke", "loss.mode=ce", "train.epochs=1", f"train.out_dir={tmp_path}"]) == 0
    image = PKU / "train" / "001" / "01_1.png"
    assert main(["embed", str(tmp_path / "deploy.pt"), str(image), "-o", str(tmp_path / "f.safetensors")]) == 2
    assert "no re-ID neck" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "best.pt"), "--rank-images", str(tmp_path / "ranks")]) == 2
    assert "--rank-images: the classification task has no such evaluation option" in capsys.readouterr().err


def test_onnx_export_outputs_the_embedding_with_its_normalisation(run, tmp_path):
    onnx = pytest.importorskip("onnx", reason="onnx export needs the onnx package (the export extra)")
    out = tmp_path / "reid.onnx"
    assert main(["export", str(run / "best.pt"), "--format", "onnx", "-o", str(out)]) == 0
    proto = onnx.load(str(out))
    assert [o.name for o in proto.graph.output] == ["embedding"]
    meta = json.loads({p.key: p.value for p in proto.metadata_props}["dhm_meta"])
    assert meta["input_size"] == [3, 64, 24] and len(meta["mean"]) == 3 and meta["output"] == "embedding"


def test_approximate_search_reads_the_faiss_index_written_beside_the_gallery(run, tmp_path, capsys):
    pytest.importorskip("faiss", reason="the faiss extra (faiss-cpu) is not installed")
    gallery, index = PKU / "val" / "all_imgs", tmp_path / "gallery.safetensors"
    assert main(["embed", str(run / "best.pt"), str(gallery), "-o", str(index), "--approximate"]) == 0
    assert f"{tmp_path / 'gallery.faiss'}: the approximate index of" in capsys.readouterr().out
    base = ["search", str(run / "best.pt"), str(gallery / "004" / "01_1.png"), "--gallery", str(index), "--top-k", "5"]
    assert main(base) == 0
    exact = capsys.readouterr().out
    assert main([*base, "--approximate"]) == 0
    assert capsys.readouterr().out == exact  # HNSW on a small gallery finds the exact neighbours
    assert main([*base, "--nprobe", "8"]) == 2 and "add --approximate" in capsys.readouterr().err
    assert main([*base, "--approximate", "--nprobe", "8"]) == 2  # HNSW has no lists
    assert "nprobe applies to the inverted-file index" in capsys.readouterr().err


def test_search_draws_each_query_with_its_ranked_gallery(run, tmp_path, capsys):
    """--show: one strip per query; a match of the query's identity (its numbered folder) framed green, another red."""
    from PIL import Image

    from dhm.retrieval.pictures import BORDER, CELL_H, GAP, GREEN, LABEL, RED

    gallery = PKU / "val" / "all_imgs"
    queries = [gallery / "004" / "01_1.png", gallery / "012" / "01_1.png"]
    png = tmp_path / "ranks.png"
    argv = ["search", str(run / "best.pt"), *map(str, queries), "--gallery", str(gallery), "--top-k", "6"]
    assert main([*argv, "--json", "--show", str(png)]) == 0
    rows = json.loads(capsys.readouterr().out)
    sheet = Image.open(png).convert("RGB")
    width = round(CELL_H * 24 / 64)  # the model's 64x24 input
    assert sheet.size == (7 * width + 6 * 2 + GAP, 2 * (CELL_H + LABEL + GAP))
    for r, row in enumerate(rows):
        qid = int(queries[r].parent.name)
        for k, match in enumerate(row["matches"]):
            frame = sheet.getpixel((width + GAP + k * (width + 2) + BORDER // 2, r * (CELL_H + LABEL + GAP) + 1))
            assert frame == (GREEN if match["id"] == qid else RED), (r, k, match)


def test_eval_draws_the_worst_and_a_sample_of_queries(run, tmp_path, capsys):
    from PIL import Image

    out = tmp_path / "ranks"
    assert main(["eval", str(run / "best.pt"), "--rank-images", str(out)]) == 0
    assert "ranked queries drawn" in capsys.readouterr().out
    for split in ("val", "test"):
        for name in ("worst", "sample"):
            size = Image.open(out / split / f"{name}.png").size
            assert size[0] > 10 * 40 and size[1] >= 2 * 128, (split, name, size)
