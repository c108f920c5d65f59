import numpy as np
import pytest

from mmedge.data.batches import token_in_box_mask
from mmedge.data.scenes import HELD_OUT_PAIRS
from mmedge.data.tasks import LABELS, QUESTION_TYPES, make_sample, mentions_held_out_pair
from mmedge.errors import UnknownTaskError


@pytest.mark.parametrize("task", sorted(LABELS))
def test_samples_are_deterministic_by_seed(task):
    a, b = make_sample(task, 7, "train", 3), make_sample(task, 7, "train", 3)
    assert np.array_equal(a.image, b.image) and a.text == b.text and a.answer == b.answer
    c = make_sample(task, 8, "train", 3)
    assert not np.array_equal(a.image, c.image)


def test_splits_draw_different_scenes():
    imgs = {s: make_sample("vqa", 0, s, 0).image for s in ("train", "val", "test", "compositional")}
    keys = list(imgs)
    for i in range(len(keys)):
        for j in range(i + 1, len(keys)):
            assert not np.array_equal(imgs[keys[i]], imgs[keys[j]])


@pytest.mark.parametrize("task", sorted(LABELS))
def test_held_out_pairs_only_in_compositional_split(task):
    for i in range(300):
        s = make_sample(task, 0, "train", i)
        assert not {(o.color, o.shape) for o in s.objects} & HELD_OUT_PAIRS
        assert not mentions_held_out_pair(s.text)
    for i in range(50):
        s = make_sample(task, 0, "compositional", i)
        assert (s.objects[0].color, s.objects[0].shape) in HELD_OUT_PAIRS


@pytest.mark.parametrize("task", sorted(LABELS))
def test_every_question_type_appears_and_labels_match_answers(task):
    samples = [make_sample(task, 0, "val", i) for i in range(400)]
    assert {s.qtype for s in samples} == set(QUESTION_TYPES[task])
    assert all(LABELS[task][s.label] == s.answer for s in samples)


def test_binary_answers_are_balanced():
    for task in ("verify", "match"):
        labels = np.array([make_sample(task, 0, "train", i).label for i in range(600)])
        assert 0.4 < labels.mean() < 0.6
    yes_no = [make_sample("vqa", 0, "train", i).answer for i in range(1500)]
    yes, no = yes_no.count("yes"), yes_no.count("no")
    assert 0.35 < yes / (yes + no) < 0.65


def test_most_visual_tokens_are_background_and_boxes_fit():
    fractions = []
    for i in range(100):
        s = make_sample("vqa", 0, "train", i)
        assert s.image.shape == (96, 96, 3) and s.image.dtype == np.uint8
        for x0, y0, x1, y1 in s.boxes:
            assert 0 <= x0 < x1 <= 96 and 0 <= y0 < y1 <= 96
        fractions.append(token_in_box_mask(s.boxes, 96, 8).mean())
    assert np.mean(fractions) < 0.35


def test_object_pixels_have_the_object_colour():
    s = make_sample("vqa", 0, "train", 11)
    from mmedge.data.scenes import COLORS

    for o in s.objects:
        px = s.image[o.cy, o.cx].astype(int) if o.shape != "triangle" else s.image[o.box[3] - 2, o.cx].astype(int)
        assert np.abs(px - np.array(COLORS[o.color])).max() <= 12


def test_unknown_task_is_a_typed_error():
    with pytest.raises(UnknownTaskError, match="choose one of"):
        make_sample("captioning", 0, "train", 0)


def test_token_classes_follow_the_drawn_objects():
    from mmedge.data.batches import token_classes
    from mmedge.data.scenes import object_class

    for i in range(30):
        s = make_sample("vqa", 0, "train", i)
        classes = token_classes(s, 8).reshape(12, 12)
        assert (classes == 0).mean() > 0.5
        for o in s.objects:
            # the patch under the object's centre carries its class unless a neighbour covers more of it
            assert object_class(o) in classes[max(0, o.cy // 8 - 1): o.cy // 8 + 2, max(0, o.cx // 8 - 1): o.cx // 8 + 2]
        assert set(np.unique(classes)) <= {0} | {object_class(o) for o in s.objects}


def test_question_type_weights_shift_training_draws_only():
    from mmedge.errors import ConfigError

    plain = [make_sample("vqa", 0, "train", i).qtype for i in range(300)]
    heavy = [make_sample("vqa", 0, "train", i, qtype_weights={"spatial": 5}).qtype for i in range(300)]
    assert heavy.count("spatial") > 2 * plain.count("spatial")
    assert make_sample("vqa", 0, "test", 4).text == make_sample("vqa", 0, "test", 4).text
    with pytest.raises(ConfigError, match="question types of vqa"):
        make_sample("vqa", 0, "train", 0, qtype_weights={"relation": 1.0})


def test_relation_curriculum_limits_spatial_relations():
    from mmedge.errors import ConfigError

    for task in ("vqa", "verify"):
        words = {w for i in range(200) for w in make_sample(task, 0, "train", i, relations=("left",)).text.split()}
        assert "left" in words and not words & {"right", "above", "below"}
    with pytest.raises(ConfigError, match="subset"):
        make_sample("vqa", 0, "train", 0, relations=("behind",))
