"""φ (tag → finest category): features, exact predictions on obvious texts, held-out report, save/load."""

from __future__ import annotations

import pytest

from recgpt_cli.errors import BadInput
from recgpt_cli.store import open_db
from recgpt_cli.tag_category import TagCategoryModel, fit_tag_category, text_features, train_tag_category

ITEMS = {
    "Cookware": ["Nonstick Frying Pan 28cm", "Stainless Steel Saucepan", "Cast Iron Skillet Pan", "Ceramic Wok Pan",
                 "Nonstick Saucepan Set"],
    "Running Shoes": ["Trail Running Shoes", "Lightweight Running Sneakers", "Cushioned Road Running Shoes",
                      "Marathon Racing Shoes", "Running Shoes for Women"],
    "Lipstick": ["Matte Red Lipstick", "Glossy Pink Lip Color", "Long Lasting Lipstick Nude", "Velvet Lip Stick",
                 "Hydrating Lipstick Coral"],
}


@pytest.fixture
def con(tmp_path):
    c = open_db(tmp_path / "phi.duckdb")
    rows = [[f"{cat[:3]}{j}", title, [ "Root", cat], cat] for cat, titles in ITEMS.items()
            for j, title in enumerate(titles)]
    c.executemany("INSERT INTO items (item_id, title, category_path, category_leaf) VALUES (?, ?, ?, ?)", rows)
    c.execute("INSERT INTO items (item_id, title) VALUES ('nocat', 'Mystery Box')")  # no category: not used
    yield c
    c.close()


def test_text_features():
    assert text_features("Pan") == ["c:<p", "c:<pa", "c:an", "c:an>", "c:n>", "c:pa", "c:pan", "w:pan"]
    assert text_features("  ") == []


def test_obvious_tags_map_to_their_category(con, tmp_path):
    phi, report = fit_tag_category(con, seed=0, holdout=0.2)
    assert report["n_items"] == 15 and report["n_classes"] == 3 and report["n_heldout"] == 3
    assert 0.0 <= report["accuracy"] <= report["top3_accuracy"] == 1.0
    preds = phi.predict(["nonstick pan", "shoes for running", "red lipstick", "lip gloss"], k=2)
    assert [p[0][0] for p in preds] == ["Cookware", "Running Shoes", "Lipstick", "Lipstick"]
    assert all(len(p) == 2 and p[0][1] > p[1][1] and abs(sum(x for _, x in p) - 1) < 0.5 for p in preds)
    # unknown words: the prior decides (all classes equal here → first by name)
    assert phi.predict_leaf(["zzzz"]) == ["Cookware"]
    loaded = TagCategoryModel.load(phi.save(tmp_path / "phi"))
    assert loaded.predict(["trail sneakers"], k=3) == phi.predict(["trail sneakers"], k=3)


def test_errors(con, tmp_path):
    with pytest.raises(BadInput):
        train_tag_category(["a"], [])
    with pytest.raises(BadInput, match="no tag"):
        TagCategoryModel.load(tmp_path / "nothing")
    con.execute("DELETE FROM items")
    with pytest.raises(BadInput, match="no items"):
        fit_tag_category(con)


def test_a_category_name_maps_to_its_category():
    # no coat title says "coat" and no film title says "drama": the naive Bayes alone cannot place the names
    texts = ["Wool Wrap Parka", "Quilted Puffer Long", "Fargo", "Richard III", *ITEMS["Lipstick"]]
    labels = ["Women's Coats", "Women's Coats", "Drama", "Drama", *["Lipstick"] * 5]
    phi = train_tag_category(texts, labels)
    nb = phi.scores(["women's coats", "drama"]).argmax(axis=1)
    assert [phi.classes[j] for j in nb] != ["Women's Coats", "Drama"]  # what the name rule is for
    names = ["women's coats", "Womens Coat", "women’s  COATS", "DRAMA", "dramas", "lipsticks"]
    assert phi.predict_leaf(names) == ["Women's Coats"] * 3 + ["Drama", "Drama", "Lipstick"]
    top = phi.predict(["drama"], k=2)[0]
    assert top[0] == ("Drama", 1.0) and top[1][1] == 0.0  # leaves_of keeps the named category alone
    # a text that only contains a name is the naive Bayes' to place
    assert phi.named_class("wool coat") is None and phi.named_class("coats for women") is None
    # a name two categories share (a shoe and shoes) is left to the naive Bayes
    twin = train_tag_category(["Trail Runner", "Slipper"], ["Shoe", "Shoes"])
    assert twin.named_class("shoes") is None
