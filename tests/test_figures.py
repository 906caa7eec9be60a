"""Structure figures: the anchor, the similarity map and the token subset against small hand computations; the
`s2dc figures` command writes both PNGs and refuses what it cannot draw."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from s2dc.cli import main
from s2dc.data.synthetic import write_dataset
from s2dc.eval.figures import anchor_similarity, anchor_token, balanced_subset
from s2dc.export import swinunetr_for
from s2dc.models.encoder import EncoderConfig

SIZES = EncoderConfig(feature_size=12, num_heads=(1, 2, 3, 4), window_size=4)


def test_the_anchor_is_the_structure_token_nearest_its_centroid():
    target = torch.zeros(6, 5, 4, dtype=torch.long)
    target[1:4, 1:4, 0:3] = 2  # a 3 x 3 x 3 block: centroid (2, 2, 1)
    target[5, 4, 3] = 2  # one stray token pulls the centroid a little, not off the block's centre
    assert anchor_token(target, 2) == (2, 2, 1)
    with pytest.raises(ValueError, match="structure 7"):
        anchor_token(target, 7)


def test_anchor_similarity_is_the_cosine_to_the_anchor():
    rng = np.random.default_rng(1)
    tokens = rng.normal(size=(3, 4, 2, 5))
    got = anchor_similarity(torch.from_numpy(tokens), (1, 2, 0)).numpy()
    a = tokens[1, 2, 0]
    want = (tokens @ a) / (np.linalg.norm(tokens, axis=-1) * np.linalg.norm(a))
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert got[1, 2, 0] == pytest.approx(1.0)


def test_balanced_subset_shares_the_count_among_the_classes():
    labels = torch.tensor([0] * 100 + [1] * 5 + [2] * 40)
    keep = balanced_subset(labels, 60, seed=3)
    counts = torch.bincount(labels[keep], minlength=3).tolist()
    assert counts == [28, 5, 27] or counts == [27, 5, 28]  # the small class whole, the rest split evenly
    assert torch.equal(keep, balanced_subset(labels, 60, seed=3)) and torch.equal(keep, keep.sort().values)
    assert len(balanced_subset(labels, 1000, seed=0)) == len(labels)


@pytest.fixture(scope="module")
def twin_and_encoder(tmp_path_factory):
    root = tmp_path_factory.mktemp("figures")
    # 32³: 64 tokens a validation case at stage 2, more than the t-SNEs here draw (100 of 128)
    source = write_dataset(root / "btcv", "btcv", cases=4, seed=3, shape=(32, 32, 32), val_fraction=0.5)
    torch.manual_seed(5)
    encoder = root / "enc.pt"
    torch.save({"state_dict": {f"swinViT.{k}": v for k, v in swinunetr_for(SIZES).swinViT.state_dict().items()},
                "encoder": SIZES.to_dict()}, encoder)
    return source, encoder


def test_figures_command_writes_both_pngs(twin_and_encoder, tmp_path, capsys):
    source, encoder = twin_and_encoder
    out = tmp_path / "fig"
    assert main(["figures", "random", f"s2dc={encoder}", "--source", str(source), "--structure", "liver",
                 "--tsne-tokens", "100", "--out-dir", str(out)]) == 0
    for name in ("similarity.png", "tsne.png"):
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.width > 300 and image.height > 200
    assert sorted(p.name for p in out.iterdir()) == ["similarity.png", "tsne.png"]  # no temporary file left
    assert str(out / "tsne.png") in capsys.readouterr().out


def test_figures_never_overwrite_a_png_they_did_not_draw(twin_and_encoder, tmp_path, capsys):
    """--out-dir may be any folder: a similarity.png or tsne.png there that s2dc did not draw (a user's picture, or
    not a PNG at all) is refused before any token is read, naming it, and left as it was; the command's own figures
    are redrawn in place."""
    source, encoder = twin_and_encoder
    out = tmp_path / "fig"
    out.mkdir()
    theirs = out / "tsne.png"
    Image.new("RGB", (8, 8), "red").save(theirs)  # a PNG, but not one of s2dc's figures
    before = theirs.read_bytes()
    command = ["figures", str(encoder), "--source", str(source), "--structure", "liver", "--tsne-tokens", "50",
               "--out-dir", str(out)]
    assert main(command) == 2
    assert f"'{theirs}' exists and is not a figure s2dc drew" in capsys.readouterr().err
    assert theirs.read_bytes() == before and sorted(p.name for p in out.iterdir()) == ["tsne.png"]
    theirs.write_text("my notes")  # not a PNG at all
    assert main(command) == 2 and theirs.read_text() == "my notes"
    theirs.unlink()
    assert main(command) == 0
    drawn = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main(command) == 0  # its own figures: redrawn
    assert sorted(drawn) == ["similarity.png", "tsne.png"] and sorted(p.name for p in out.iterdir()) == sorted(drawn)


def test_figures_refuse_an_unknown_structure_and_a_classification_dataset(twin_and_encoder, tmp_path, capsys):
    source, encoder = twin_and_encoder
    assert main(["figures", str(encoder), "--source", str(source), "--structure", "brain",
                 "--out-dir", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "'brain' is not a class" in err and "liver" in err
    cls = write_dataset(tmp_path / "cc", "cc_ccii", cases=6, seed=1, shape=(32, 32, 32), val_fraction=0.5)
    assert main(["figures", str(encoder), "--source", str(cls), "--structure", "CP",
                 "--out-dir", str(tmp_path / "b")]) == 2
    assert "classification dataset" in capsys.readouterr().err
    assert main(["figures", str(encoder), "--source", str(source), "--structure", "left adrenal gland", "--stage", "4",
                 "--out-dir", str(tmp_path / "c")]) == 2  # 32-voxel blocks: no adrenal gland fills an eighth of one
    assert "carries 'left adrenal gland' at stage 4" in capsys.readouterr().err
    assert main(["figures", str(encoder), "--source", str(source), "--structure", "liver", "--tsne-tokens", "1",
                 "--out-dir", str(tmp_path / "d")]) == 2
    assert "--tsne-tokens must be at least 2" in capsys.readouterr().err
    assert not any((tmp_path / d).exists() for d in "abcd")


def test_figures_anchor_on_a_tissue_of_the_twins_anatomy_map(twin_and_encoder, tmp_path, capsys):
    """`--labels anatomy`: the BraTS twin's tissue map gives the structures (white matter, which BraTS does not
    label); a dataset whose cases carry no such map is refused, naming the maps it has."""
    _, encoder = twin_and_encoder
    brats = write_dataset(tmp_path / "brats", "brats21", cases=2, seed=2, shape=(32, 32, 32), val_fraction=0.5)
    out = tmp_path / "fig"
    assert main(["figures", "voxels", f"s2dc={encoder}", "--source", str(brats), "--labels", "anatomy",
                 "--structure", "white matter", "--stage", "1", "--tsne-tokens", "100", "--out-dir", str(out)]) == 0
    with Image.open(out / "similarity.png") as image:
        assert image.format == "PNG" and image.width > 300
    capsys.readouterr()
    assert main(["figures", str(encoder), "--source", str(brats), "--structure", "white matter", "--stage", "1",
                 "--out-dir", str(tmp_path / "a")]) == 2  # not a BraTS label
    assert "'white matter' is not a class of the 'label' map" in capsys.readouterr().err
    btcv, _ = twin_and_encoder
    assert main(["figures", str(encoder), "--source", str(btcv), "--labels", "anatomy", "--structure", "liver",
                 "--out-dir", str(tmp_path / "b")]) == 2
    assert "has no per-voxel map 'anatomy'" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_the_tsne_title_does_not_overlap_the_panel_titles(tmp_path, monkeypatch):
    """The committed t-SNE figures (results/quick/figures/*/tsne.png and the ablation's seven panels) drew the
    figure's title over the encoders' panel titles: the square panels fill the figure's height, so the suptitle at
    its default place sat on them. Every panel title's box is now below the figure title's."""
    import s2dc.eval.figures as figures

    drawn = {}

    def keep(fig, out):
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        drawn["title"] = fig._suptitle.get_window_extent(renderer)
        drawn["panels"] = [ax.title.get_window_extent(renderer) for ax in fig.axes if ax.get_title()]
        return out

    monkeypatch.setattr(figures, "save_png", keep)
    rng = torch.Generator().manual_seed(0)
    labels = torch.arange(40) % 4
    feats = {name: torch.randn(40, 8, generator=rng) for name in ("voxels", "random", "lg", "s2dc")}
    figures.tsne_figure(feats, labels, ["a", "b", "c", "d"], tmp_path / "tsne.png", "synthetic_btcv, stage 2: t-SNE",
                        max_tokens=40)
    assert len(drawn["panels"]) == 4
    for panel in drawn["panels"]:
        assert panel.y1 <= drawn["title"].y0, (panel, drawn["title"])
