"""Tests of TimmExtractor on randomly initialised tiny timm models (nothing downloads)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spectralnet_seg.features import TimmExtractor, list_extractors, make_extractor

TINY_VIT = dict(depth=3, embed_dim=32, num_heads=2)


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.manual_seed(0)


def _vit(**params) -> TimmExtractor:
    params.setdefault("model_kwargs", TINY_VIT)
    return TimmExtractor("vit_tiny_patch16_224", pretrained=False, device="cpu", **params)


def _images(n=2, h=48, w=64, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def test_vit_patch_tokens_on_the_patch_grid():
    images = _images(3)
    ex = _vit(batch_size=2)
    out = ex.extract(images)
    assert ex.kind_ == "vit" and ex.stride_ == 16
    assert out.features.shape == (3, 3, 4, 32) and out.features.dtype == np.float32
    assert out.image_sizes == [(48, 64)] * 3
    np.testing.assert_allclose(out.colors[0, 1, 2], images[0, 16:32, 32:48].mean((0, 1)) / 255,
                               atol=1e-5)
    # The same as the model's normed output without its class token, batch by batch.
    x = torch.from_numpy(ex._preprocess(list(images), (48, 64)))
    with torch.no_grad():
        tokens = ex.model_.forward_features(x)[:, 1:].reshape(3, 3, 4, 32)
    np.testing.assert_allclose(out.features, tokens.numpy(), atol=1e-5)
    # Batching does not change the result (same model: batch_size does not rebuild it).
    np.testing.assert_allclose(ex.set_params(batch_size=3).extract(images).features,
                               out.features, atol=1e-5)


def test_vit_dynamic_size_and_image_size():
    ex = _vit()
    assert ex.extract(_images(1, 80, 40)).grid_shape == (5, 2)  # any size, no resampling
    assert ex.extract(_images(1, 50, 70)).grid_shape == (3, 4)  # rounded to whole patches
    assert _vit(image_size=32).extract(_images(2, 80, 40)).grid_shape == (2, 2)
    mixed = ex.extract([_images(1, 48, 64)[0], _images(1, 96, 32)[0]])
    assert mixed.grid_shape == (3, 4) and mixed.image_sizes == [(48, 64), (96, 32)]


def test_register_tokens_are_dropped():
    ex = TimmExtractor("vit_small_patch14_reg4_dinov2", pretrained=False, device="cpu",
                       model_kwargs=dict(depth=1, embed_dim=32, num_heads=2, img_size=28))
    out = ex.extract(_images(1, 42, 56))
    assert ex.model_.num_prefix_tokens == 5
    assert out.features.shape == (1, 3, 4, 32)


def test_vit_block_concatenation_and_keys():
    images = _images(2)
    paper = _vit(layers="paper")
    out = paper.extract(images)
    assert paper.layer_indices_ == [0, 1, 2] and out.n_features == 96
    x = torch.from_numpy(paper._preprocess(list(images), (48, 64)))
    with torch.no_grad():
        blocks = paper.model_.forward_intermediates(x, indices=[0, 1, 2], norm=True,
                                                    intermediates_only=True)
    np.testing.assert_allclose(out.features[..., 32:64],
                               blocks[1].permute(0, 2, 3, 1).numpy(), atol=1e-5)
    assert paper.set_params(layers=[0, -1]).extract(images).n_features == 64
    key_extractor = _vit(layers=-1, facet="key")
    keys = key_extractor.extract(images)
    tokens = key_extractor.set_params(facet="token").extract(images)  # same model
    assert keys.features.shape == tokens.features.shape == (2, 3, 4, 32)
    assert not np.allclose(keys.features, tokens.features)
    # Keys are the middle third of the last block's qkv projection of its patch tokens.
    model = key_extractor.model_
    last = model.blocks[-1]
    with torch.no_grad():
        qkv = last.attn.qkv(last.norm1(model.forward_intermediates(
            x, indices=[1], intermediates_only=True, output_fmt="NLC")[0]))
    np.testing.assert_allclose(keys.features, qkv[..., 32:64].reshape(2, 3, 4, 32).numpy(),
                               atol=1e-4)


def test_key_facet_reads_the_deepest_selected_block_whatever_the_order():
    """Unsorted layers took the keys of the first-listed block and dropped the other one."""
    images = _images(1)
    ex = _vit(layers=[2, 0], facet="key")
    out = ex.extract(images)
    assert ex.layer_indices_ == [0, 2] and out.n_features == 64
    model = ex.model_
    x = torch.from_numpy(ex._preprocess(list(images), (48, 64)))
    with torch.no_grad():
        first = model.forward_intermediates(x, indices=[0], norm=True,
                                            intermediates_only=True)[0]
        second = model.forward_intermediates(x, indices=[1], intermediates_only=True,
                                             output_fmt="NLC")[0]
        qkv = model.blocks[2].attn.qkv(model.blocks[2].norm1(second))
    np.testing.assert_allclose(out.features[..., :32], first.permute(0, 2, 3, 1).numpy(),
                               atol=1e-5)
    np.testing.assert_allclose(out.features[..., 32:], qkv[..., 32:64].reshape(1, 3, 4, 32),
                               atol=1e-4)
    assert _vit(layers=[1, 1, -2]).extract(images).n_features == 32  # one block, once
    with pytest.raises(ValueError, match="layers must be"):
        _vit(layers=True).extract(images)  # a bool is not a block index


def test_swin_hybrid_and_eva_backbones():
    """Swin's NHWC stage maps were read as NCHW (a 7 x 128 grid of 7 features) and needed
    224 px; a hybrid ViT reported stride 1; EVA's keys bypass the hooked projection."""
    swin = TimmExtractor("swin_tiny_patch4_window7_224", pretrained=False, device="cpu",
                         model_kwargs=dict(embed_dim=16, depths=(1, 1, 1, 1),
                                           num_heads=(1, 1, 1, 1)))
    images = _images(1, 64, 96)
    out = swin.extract(images)
    assert swin.stride_ == 32 and out.features.shape == (1, 2, 3, 128)
    with torch.no_grad():
        stages = swin.model_(torch.from_numpy(swin._preprocess(list(images), (64, 96))))
    np.testing.assert_allclose(out.features, stages[-1].numpy(), atol=1e-5)  # NHWC already
    assert swin.extract(_images(1, 224, 224)).features.shape == (1, 7, 7, 128)
    hybrid = TimmExtractor("vit_small_r26_s32_224", pretrained=False, device="cpu",
                           model_kwargs=dict(depth=1, embed_dim=32, num_heads=2))
    assert hybrid.extract(_images(1, 70, 100)).features.shape == (1, 2, 3, 32)
    assert hybrid.stride_ == 32
    with pytest.raises(ValueError, match="smaller than the minimum 32x32"):
        hybrid.extract(_images(1, 20, 20))  # was a torch reshape error
    for fused in (True, False):  # a separate k bias; or separate q, k, v projections
        eva = TimmExtractor("eva02_tiny_patch14_224", pretrained=False, facet="key",
                            device="cpu", model_kwargs=dict(TINY_VIT, qkv_fused=fused))
        with pytest.raises(ValueError, match="facet='key' is not supported for EvaAttention"):
            eva.extract(_images(1, 56, 56))


def test_cnn_feature_maps():
    ex = TimmExtractor("test_resnet", pretrained=False, device="cpu")
    out = ex.extract(_images(2, 64, 96))
    assert ex.kind_ == "cnn" and ex.stride_ == 32
    assert out.features.shape == (2, 2, 3, ex.model_.feature_info.channels()[-1])
    two = TimmExtractor("test_resnet", pretrained=False, device="cpu", layers=[-1, 2])
    out = two.extract(_images(2, 64, 96))
    channels = two.model_.feature_info.channels()
    assert two.stride_ == 8 and out.features.shape == (2, 8, 12, channels[2] + channels[-1])


def test_layers_index_the_maps_a_features_only_model_returns():
    # With out_indices=(2, 3, 4) the model returns 3 maps, but layers were checked against
    # all 5 stages: the default (last stage) raised an IndexError, and layers=0 gave stage
    # 2 while BEiT-like models' and DLA's layers=0 gave another block than documented.
    images = _images(1, 64, 96)
    ex = TimmExtractor("test_resnet", pretrained=False, device="cpu",
                       model_kwargs=dict(out_indices=(2, 3, 4)))
    out = ex.extract(images)
    x = torch.from_numpy(ex._preprocess(list(images), (64, 96)))
    with torch.inference_mode():
        maps = ex.model_(x)  # timm's own maps: stages 2, 3, 4 at strides 8, 16, 32
    assert ex.stride_ == 32
    np.testing.assert_array_equal(out.features[0], maps[-1][0].permute(1, 2, 0).numpy())
    first = ex.set_params(layers=0).extract(images)
    assert ex.stride_ == 8
    np.testing.assert_array_equal(first.features[0], maps[0][0].permute(1, 2, 0).numpy())
    with pytest.raises(ValueError, match=r"has 3 feature stages"):
        ex.set_params(layers=3).extract(images)


def test_multi_stage_maps_cover_the_same_pixels():
    # A 100-px input is a multiple of the finest selected stride (4) but not of the
    # coarsest (32): the 32-px map then covered 128 px (4 cells), stretched over 100 px,
    # and its cells sat up to 20 px from the fine cells beside them.
    ex = TimmExtractor("test_resnet", pretrained=False, device="cpu", layers=[1, 4])
    out = ex.extract(_images(1, 100, 100))
    assert ex.stride_ == 4 and ex.size_multiple_ == 32
    assert out.features.shape[1:3] == (24, 24)  # 96 px: 3 whole cells of 32 px
    single = TimmExtractor("test_resnet", pretrained=False, device="cpu", layers=1)
    assert single.extract(_images(1, 100, 100)).features.shape[1:3] == (25, 25)


def test_key_facet_is_refused_where_there_are_no_keys():
    ex = TimmExtractor("test_resnet", pretrained=False, device="cpu", facet="key")
    with pytest.raises(ValueError, match="facet='key' reads the attention keys"):
        ex.extract(_images(1, 64, 64))


def test_checkpoint_files_load(tmp_path):
    images = _images(2)
    reference = _vit()
    expected = reference.extract(images).features
    path = tmp_path / "tiny_vit.pth"
    torch.save(reference.model_.state_dict(), path)
    torch.manual_seed(123)  # a different random init, overwritten by the checkpoint
    strict = _vit(checkpoint_path=path)
    np.testing.assert_allclose(strict.extract(images).features, expected, atol=1e-5)
    # pretrained=True with a local file goes through timm's checkpoint filter, offline.
    filtered = TimmExtractor("vit_tiny_patch16_224", pretrained=True, device="cpu",
                             pretrained_cfg_overlay=dict(file=str(path)), model_kwargs=TINY_VIT)
    np.testing.assert_allclose(filtered.extract(images).features, expected, atol=1e-5)


def test_memory_cache(tmp_path):
    images = _images(2)
    ex = _vit(memory=tmp_path / "cache")
    first = ex.extract(images).features

    def fail(batch):
        raise AssertionError("the backbone ran although the result was cached")

    ex._forward = fail
    np.testing.assert_array_equal(ex.extract(images).features, first)
    with pytest.raises(AssertionError, match="backbone ran"):
        ex.extract(_images(2, seed=1))


def test_registry_and_progress(capsys):
    ex = make_extractor("timm:vit_tiny_patch16_224", pretrained=False, model_kwargs=TINY_VIT,
                        verbose=True)
    assert isinstance(ex, TimmExtractor) and ex.model_name == "vit_tiny_patch16_224"
    ex.extract(_images(1))
    assert "vit_tiny_patch16_224" in capsys.readouterr().err
    assert "timm:vit_tiny_patch16_224" in list_extractors("timm:vit_tiny*")
    with pytest.raises(ValueError, match="needs an argument"):
        make_extractor("timm")
    with pytest.raises(ValueError, match="given twice"):
        make_extractor("timm:resnet18", model_name="resnet50")


def test_offline_hub_download_fails_clearly(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    ex = TimmExtractor("vit_tiny_patch16_224", pretrained=True, model_kwargs=TINY_VIT)
    with pytest.raises(OSError, match="checkpoint_path=.*pretrained=False"):
        ex.extract(_images(1))


def test_local_checkpoint_needs_no_download(tmp_path, monkeypatch):
    """``checkpoint_path`` with the default ``pretrained=True`` loads the file offline."""
    import huggingface_hub.constants

    images = _images(1)
    reference = _vit()
    expected = reference.extract(images).features  # builds the model
    path = tmp_path / "tiny_vit.pth"
    torch.save(reference.model_.state_dict(), path)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    local = TimmExtractor("vit_tiny_patch16_224", checkpoint_path=path, device="cpu",
                          model_kwargs=TINY_VIT)
    assert local.pretrained  # the default, which the local file overrides
    np.testing.assert_allclose(local.extract(images).features, expected, atol=1e-5)


def test_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown timm model 'not_a_model'"):
        TimmExtractor("not_a_model", pretrained=False).extract(_images(1))
    with pytest.raises(ValueError, match="smaller than the minimum 16x16"):
        _vit().extract(_images(1, 8, 64))
    with pytest.raises(ValueError, match="smaller than one patch"):
        _vit(image_size=8).extract(_images(1))
    with pytest.raises(FileNotFoundError, match="checkpoint_path"):
        _vit(checkpoint_path=tmp_path / "missing.pth").extract(_images(1))
    with pytest.raises(FileNotFoundError, match="pretrained_cfg_overlay"):
        _vit(pretrained_cfg_overlay=dict(file=tmp_path / "x.pth")).extract(_images(1))
    with pytest.raises(ValueError, match="out of range.*3 blocks"):
        _vit(layers=[0, 5]).extract(_images(1))
    with pytest.raises(ValueError, match="facet"):
        _vit(facet="value").extract(_images(1))
    with pytest.raises(ValueError, match="image_size"):
        _vit(image_size=(32,)).extract(_images(1))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            TimmExtractor("vit_tiny_patch16_224", pretrained=False, device="cuda",
                          model_kwargs=TINY_VIT).extract(_images(1))


def test_a_pickled_extractor_extracts_the_same_and_loads_on_a_machine_without_its_device():
    import pickle
    images = _images(2)
    ex = _vit()
    expected = ex.extract(images).features
    loaded = pickle.loads(pickle.dumps(ex))
    np.testing.assert_array_equal(loaded.extract(images).features, expected)
    assert all(p.device.type == "cpu" for p in loaded.model_.parameters())
    if torch.cuda.is_available():
        pytest.skip("the fallback is for machines without CUDA")
    # Saved where CUDA was asked for, loaded here: it runs on the CPU, and says so.
    ex.device = "cuda"
    ex._built_key = ex._build_key()  # as if it had been built there
    with pytest.warns(UserWarning, match="runs on the CPU"):
        moved = pickle.loads(pickle.dumps(ex))
    assert moved.device_.type == "cpu"
    np.testing.assert_array_equal(moved.extract(images).features, expected)
