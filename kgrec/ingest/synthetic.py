"""A synthetic shop with planted structure: the quickstart data and the test data.

What is planted, so that a good recommender clearly beats popularity:

- a category tree (5 departments > 3–4 subcategories > 2–3 leaves, e-commerce names);
- about one brand per 10 products, each brand making 90% of its products in one department;
- product titles ``"<Brand> <Adjective> <Leaf noun>[, <variant>]"``, a short description
  and a price around a per-leaf level;
- Zipf (long-tail) product popularity, exponent 0.9 unless ``popularity_exponent`` says otherwise;
- users with 1–2 favourite leaf categories and 1–2 favourite brands: ~80% of their visits
  go to products of those, the rest follow global popularity; favourite products also
  convert better (view → click → cart → purchase), so purchases concentrate even more;
- ``also_bought`` relations (same brand or same subcategory), and users who follow them:
  a quarter of the visits after the first go to an ``also_bought`` of the previous one.

Everything is drawn with numpy from one seeded generator and written with polars, so a
seed gives the same bytes, and 100,000 products / 1,000,000 events take seconds. The events
and relations are kept as index arrays and written in chunks of rows, so a shop of 10^6
products, 10^6 users and 10^7 events fits in a few GB.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl

from kgrec.frame_writer import FrameWriter
from kgrec.ingest.tables import CATEGORY_SEPARATOR

SampleFormat = Literal["csv", "jsonl", "parquet"]

# department -> subcategory -> leaf nouns (singular, as they appear in titles)
CATEGORY_TREE: dict[str, dict[str, list[str]]] = {
    "Beauty": {
        "Makeup": ["Eyeliner", "Mascara", "Lipstick"],
        "Skin Care": ["Moisturizer", "Cleanser", "Serum"],
        "Hair Care": ["Shampoo", "Conditioner", "Hair Oil"],
        "Fragrance": ["Eau de Parfum", "Body Mist"],
    },
    "Electronics": {
        "Audio": ["Headphones", "Earbuds", "Bluetooth Speaker"],
        "Computer Accessories": ["Keyboard", "Mouse", "USB-C Hub"],
        "Phone Accessories": ["Phone Case", "Charger", "Screen Protector"],
        "Cameras": ["Action Camera", "Tripod"],
    },
    "Home & Kitchen": {
        "Cookware": ["Frying Pan", "Saucepan", "Dutch Oven"],
        "Kitchen Tools": ["Chef Knife", "Cutting Board", "Peeler"],
        "Bedding": ["Duvet Cover", "Pillow", "Sheet Set"],
        "Decor": ["Scented Candle", "Vase"],
    },
    "Sports & Outdoors": {
        "Fitness": ["Yoga Mat", "Dumbbell", "Resistance Band"],
        "Camping": ["Tent", "Sleeping Bag", "Headlamp"],
        "Cycling": ["Bike Helmet", "Bike Light"],
    },
    "Office Products": {
        "Writing": ["Gel Pen", "Pencil", "Highlighter"],
        "Paper": ["Notebook", "Sticky Notes", "Printer Paper"],
        "Desk Organization": ["Desk Organizer", "File Folder", "Stapler"],
    },
}

ADJECTIVES: dict[str, list[str]] = {
    "Beauty": ["Matte", "Hydrating", "Radiant", "Velvet", "Gentle", "Long-Wear", "Nourishing", "Silk"],
    "Electronics": ["Wireless", "Compact", "Pro", "Smart", "Ultra", "Portable", "Rugged", "Slim"],
    "Home & Kitchen": ["Nonstick", "Classic", "Cast", "Organic", "Cozy", "Stainless", "Rustic", "Modern"],
    "Sports & Outdoors": ["Lightweight", "Trail", "Insulated", "Pro", "Grip", "Foldable", "Reflective", "All-Season"],
    "Office Products": ["Smooth", "Recycled", "Heavy-Duty", "Pastel", "Refillable", "Compact", "Classic", "Bold"],
}

VARIANTS: dict[str, list[str]] = {
    "Beauty": ["Jet Black", "Rose", "Nude", "Travel Size", "Sensitive Skin", "Unscented"],
    "Electronics": ["Black", "White", "2-Pack", "Gen 2", "Graphite", "Midnight Blue"],
    "Home & Kitchen": ["10 inch", "12 inch", "Queen", "King", "Sage", "Charcoal"],
    "Sports & Outdoors": ["Small", "Medium", "Large", "Olive", "Orange", "2-Person"],
    "Office Products": ["Blue", "Assorted Colors", "12-Pack", "A5", "Letter Size", "Black"],
}

BENEFITS: dict[str, list[str]] = {
    "Beauty": ["Dermatologist tested.", "Cruelty-free formula.", "Lasts all day.", "Suits all skin types."],
    "Electronics": ["Up to 30 hours of battery.", "Works with iOS and Android.", "Fast charging.", "Two-year warranty."],
    "Home & Kitchen": ["Dishwasher safe.", "Made to last for years.", "Easy to clean.", "Oven safe to 260 °C."],
    "Sports & Outdoors": ["Built for the outdoors.", "Weather resistant.", "Packs down small.", "Tested by athletes."],
    "Office Products": ["Acid-free.", "Smudge-proof ink.", "For home and office.", "Made from recycled material."],
}

_BRAND_HEADS = [
    "Lu", "Ve", "Ka", "No", "Ori", "Sol", "Mi", "Ze", "Ar", "Bel", "Cor", "Da", "El", "Fen", "Ga", "Hal", "Is",
    "Jo", "Kel", "Lin", "Mar", "Nev", "Ol", "Pra", "Quin", "Ro", "Sa", "Tor", "Ul", "Vi", "Wen", "Xa", "Yo", "Zin",
]
_BRAND_TAILS = [
    "men", "xa", "ra", "va", "lia", "ton", "mo", "ria", "nix", "dor", "ly", "ver", "ka", "sa", "tis", "ro", "na",
    "via", "lo", "ran", "mi", "bel", "za", "tek", "ona", "ris", "len", "vo", "dia", "kin",
]
_BRAND_SUFFIXES = ["", " Labs", " & Co", " Studio", " Works", " Goods", " Supply", " Collective", " House", " Basics"]

COUNTRIES = ["US", "GB", "DE", "FR", "ES", "IT", "NL", "SE", "PL", "CA"]
AGE_BANDS = ["18-24", "25-34", "35-44", "45-54", "55+"]

START_EPOCH = 1_711_929_600  # 2024-04-01T00:00:00Z; fixed so that a seed gives the same bytes
SPAN_SECONDS = 90 * 24 * 3600

PREFERRED_SHARE = 0.8  # share of visits that go to a user's favourite leaves/brands
WITHIN_FAVOURITE_POPULARITY = 0.5  # exponent on popularity when picking inside a favourite leaf/brand
FOLLOW_ALSO_BOUGHT = 0.25  # share of later visits that follow an also_bought of the previous visit
# Conversion per funnel step, for (non-preferred, preferred) visits.
P_CLICK = np.array([0.45, 0.7])
P_CART = np.array([0.25, 0.45])
P_PURCHASE = np.array([0.45, 0.7])


@dataclass(frozen=True)
class SampleShop:
    """A generated shop in the ingest input format, plus the planted truth.

    ``preferences``: ``[user_id, favourite_brands List(Utf8), favourite_categories List(Utf8)]``
    (category paths); not written to disk, for tests and demos.
    """

    products: pl.DataFrame
    interactions: pl.DataFrame
    relations: pl.DataFrame
    users: pl.DataFrame
    preferences: pl.DataFrame


SAMPLE_TABLES: tuple[str, ...] = ("products", "interactions", "relations", "users")
POPULARITY_EXPONENT = 0.9
"""Zipf exponent of product popularity: the product of popularity rank r gets weight 1 / r**s."""
CHUNK_ROWS = 500_000
"""Rows of interactions and relations per written batch: the files of a shop with 10^7 events
are written without building those tables as whole frames."""


def write_sample_shop(
    out_dir: str | Path,
    num_products: int = 500,
    num_users: int = 300,
    seed: int = 0,
    events_per_user: int = 20,
    file_format: SampleFormat = "csv",
    popularity_exponent: float = POPULARITY_EXPONENT,
    chunk_rows: int = CHUNK_ROWS,
) -> dict[str, Path]:
    """Write ``products``, ``interactions``, ``relations`` and ``users`` files into ``out_dir``.

    Returns ``{"products": path, "interactions": path, "relations": path, "users": path}``.
    The same arguments always give the same bytes (``chunk_rows`` aside: it changes only how
    a Parquet file is laid out, never its content, and CSV or JSON lines not at all).
    ``events_per_user`` is a mean.
    """
    if file_format not in ("csv", "jsonl", "parquet"):
        raise ValueError(f"file_format must be one of csv, jsonl, parquet; found {file_format!r}")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, found {chunk_rows}")
    drawn = _draw_shop(num_products, num_users, seed, events_per_user, popularity_exponent)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for name in SAMPLE_TABLES:
        path = out / f"{name}.{file_format}"
        schema = drawn.rows(name, 0, 0).schema
        with FrameWriter(path, file_format, schema, float_precision=2) as writer:
            for start in range(0, drawn.num_rows(name), chunk_rows):
                writer.write(drawn.rows(name, start, start + chunk_rows))
        paths[name] = path
    return paths


def generate_sample_shop(
    num_products: int = 500,
    num_users: int = 300,
    seed: int = 0,
    events_per_user: int = 20,
    popularity_exponent: float = POPULARITY_EXPONENT,
) -> SampleShop:
    """Generate a shop in memory (see the module docstring for the planted structure)."""
    drawn = _draw_shop(num_products, num_users, seed, events_per_user, popularity_exponent)
    tables = {name: drawn.rows(name, 0, drawn.num_rows(name)) for name in SAMPLE_TABLES}
    return SampleShop(**tables, preferences=drawn.preferences)


@dataclass(frozen=True)
class _DrawnShop:
    """Everything drawn for one shop: products and users as frames, the many events and
    relations as index arrays, turned into rows a slice at a time by :meth:`rows`."""

    products: pl.DataFrame
    users: pl.DataFrame
    preferences: pl.DataFrame
    product_ids: pl.Series
    user_ids: pl.Series
    also_bought: _Relations
    interactions: dict[str, np.ndarray]

    def num_rows(self, name: str) -> int:
        if name == "interactions":
            return len(self.interactions["user"])
        if name == "relations":
            return len(self.also_bought.sources)
        return getattr(self, name).height

    def rows(self, name: str, start: int, stop: int) -> pl.DataFrame:
        """Rows ``start:stop`` of the table ``name`` in the ingest input format."""
        if name == "interactions":
            part = {key: values[start:stop] for key, values in self.interactions.items()}
            return pl.DataFrame(
                {
                    "user_id": self.user_ids.gather(part["user"]),
                    "product_id": self.product_ids.gather(part["product"]),
                    "event": pl.Series(["view", "click", "cart", "purchase"]).gather(part["event"]),
                    "timestamp": _iso_timestamps(part["time"]),
                }
            )
        if name == "relations":
            sources, targets = self.also_bought.sources[start:stop], self.also_bought.targets[start:stop]
            return pl.DataFrame(
                {
                    "product_id": self.product_ids.gather(sources),
                    "relation": pl.repeat("also_bought", len(sources), eager=True),
                    "related_product_id": self.product_ids.gather(targets),
                }
            )
        return getattr(self, name).slice(start, stop - start)


def _draw_shop(
    num_products: int, num_users: int, seed: int, events_per_user: int, popularity_exponent: float
) -> _DrawnShop:
    if num_products < 10:
        raise ValueError(f"num_products must be at least 10, found {num_products}")
    if num_users < 1:
        raise ValueError(f"num_users must be at least 1, found {num_users}")
    if events_per_user < 1:
        raise ValueError(f"events_per_user must be at least 1, found {events_per_user}")
    if popularity_exponent < 0:
        raise ValueError(f"popularity_exponent must be 0 (uniform) or more, found {popularity_exponent}")
    rng = np.random.default_rng(seed)
    tree = _Tree.build()
    catalog = _make_catalog(rng, tree, num_products, popularity_exponent)
    also_bought = _make_also_bought(rng, catalog)
    users = _make_users(rng, catalog, num_users)
    interactions = _make_interactions(rng, catalog, users, also_bought, events_per_user)

    product_ids = _ids("P", num_products)
    user_ids = _ids("U", num_users)
    products = _product_frame(rng, tree, catalog, product_ids)
    user_frame = pl.DataFrame(
        {
            "user_id": user_ids,
            "country": pl.Series(COUNTRIES).gather(rng.integers(len(COUNTRIES), size=num_users)),
            "age_band": pl.Series(AGE_BANDS).gather(rng.integers(len(AGE_BANDS), size=num_users)),
        }
    )
    brand_names = pl.Series(catalog.brand_names)
    leaf_paths = pl.Series(tree.leaf_paths)
    preferences = pl.DataFrame(
        {
            "user_id": user_ids,
            "brand_0": brand_names.gather(users.brand_choices[:, 0]),
            "brand_1": brand_names.gather(users.brand_choices[:, 1]),
            "leaf_0": leaf_paths.gather(users.leaf_choices[:, 0]),
            "leaf_1": leaf_paths.gather(users.leaf_choices[:, 1]),
        }
    ).select(
        "user_id",
        favourite_brands=pl.concat_list("brand_0", "brand_1").list.unique(maintain_order=True),
        favourite_categories=pl.concat_list("leaf_0", "leaf_1").list.unique(maintain_order=True),
    )
    return _DrawnShop(products, user_frame, preferences, product_ids, user_ids, also_bought, interactions)


# --------------------------------------------------------------------------- building blocks


@dataclass(frozen=True)
class _Tree:
    """The category tree flattened to leaves: ``leaf_department[leaf]``, ``leaf_subcategory[leaf]``, ..."""

    departments: list[str]
    leaf_nouns: list[str]
    leaf_paths: list[str]
    leaf_department: np.ndarray  # [num_leaves]
    leaf_subcategory: np.ndarray  # [num_leaves], index over all subcategories
    subcategory_names: list[str]

    @staticmethod
    def build() -> _Tree:
        departments = list(CATEGORY_TREE)
        nouns, paths, leaf_department, leaf_subcategory, subcategory_names = [], [], [], [], []
        for d, department in enumerate(departments):
            for subcategory, leaves in CATEGORY_TREE[department].items():
                subcategory_names.append(subcategory)
                for noun in leaves:
                    nouns.append(noun)
                    paths.append(CATEGORY_SEPARATOR.join([department, subcategory, noun]))
                    leaf_department.append(d)
                    leaf_subcategory.append(len(subcategory_names) - 1)
        return _Tree(departments, nouns, paths, np.array(leaf_department), np.array(leaf_subcategory), subcategory_names)


@dataclass(frozen=True)
class _Catalog:
    """Products as index arrays: ``product_brand[p]``, ``product_leaf[p]``, ``popularity[p]``."""

    tree: _Tree
    brand_names: list[str]
    product_brand: np.ndarray  # [num_products]
    product_leaf: np.ndarray  # [num_products]
    popularity: np.ndarray  # [num_products], sums to 1

    @property
    def num_products(self) -> int:
        return len(self.product_brand)


@dataclass(frozen=True)
class _Relations:
    sources: np.ndarray  # [num_relations] product indices, sorted
    targets: np.ndarray  # [num_relations]
    offsets: np.ndarray  # [num_products + 1]: targets of p are targets[offsets[p]:offsets[p + 1]]


@dataclass(frozen=True)
class _Users:
    """Favourites per user; a user with a single favourite has it in both columns."""

    leaf_choices: np.ndarray  # [num_users, 2] leaf indices
    brand_choices: np.ndarray  # [num_users, 2] brand indices


class _GroupSampler:
    """Draws a product from a given group (a leaf, a brand, ...), proportional to popularity."""

    def __init__(self, group_of_product: np.ndarray, popularity: np.ndarray, num_groups: int) -> None:
        self.order = np.argsort(group_of_product, kind="stable")
        self.cumulative = np.cumsum(popularity[self.order])
        counts = np.bincount(group_of_product, minlength=num_groups)
        self.ends = np.cumsum(counts)
        self.starts = self.ends - counts
        self.low = np.where(self.starts > 0, self.cumulative[np.maximum(self.starts - 1, 0)], 0.0)
        self.high = self.cumulative[np.maximum(self.ends - 1, 0)]

    def sample(self, rng: np.random.Generator, groups: np.ndarray) -> np.ndarray:
        """One product index per entry of ``groups`` (each group must have a product)."""
        target = self.low[groups] + rng.random(len(groups)) * (self.high[groups] - self.low[groups])
        position = np.searchsorted(self.cumulative, target, side="right")
        # Guard against float round-off at a group's edges.
        position = np.clip(position, self.starts[groups], self.ends[groups] - 1)
        return self.order[position]


def _make_catalog(rng: np.random.Generator, tree: _Tree, num_products: int, popularity_exponent: float) -> _Catalog:
    num_brands = max(3, num_products // 10)
    num_departments = len(tree.departments)
    brand_department = rng.integers(num_departments, size=num_brands)
    # Brand sizes are skewed too: a few big brands, many small ones.
    brand_weight = 1.0 / np.arange(1, num_brands + 1) ** 0.6
    product_brand = rng.choice(num_brands, size=num_products, p=brand_weight / brand_weight.sum())
    product_department = np.where(
        rng.random(num_products) < 0.9,
        brand_department[product_brand],
        rng.integers(num_departments, size=num_products),
    )
    leaves_of_department = [np.flatnonzero(tree.leaf_department == d) for d in range(num_departments)]
    leaf_count = np.array([len(leaves) for leaves in leaves_of_department])
    leaf_offset = np.concatenate([[0], np.cumsum(leaf_count)[:-1]])  # leaves are grouped by department
    product_leaf = leaf_offset[product_department] + (rng.random(num_products) * leaf_count[product_department]).astype(int)
    # Zipf popularity over a random ranking of the products.
    rank = rng.permutation(num_products) + 1
    popularity = 1.0 / rank**popularity_exponent
    return _Catalog(tree, _brand_names(rng, num_brands), product_brand, product_leaf, popularity / popularity.sum())


def _brand_names(rng: np.random.Generator, num_brands: int) -> list[str]:
    stems = [head + tail for head in _BRAND_HEADS for tail in _BRAND_TAILS]
    stems = [stems[i] for i in rng.permutation(len(stems))]
    names = [stem + suffix for suffix in _BRAND_SUFFIXES for stem in stems]
    while len(names) < num_brands:  # only for shops far beyond 100,000 products
        names += [f"{name} {len(names) // len(stems)}" for name in names[: len(stems)]]
    return names[:num_brands]


def _make_also_bought(rng: np.random.Generator, catalog: _Catalog) -> _Relations:
    """2–5 related products each, half from the same brand, half from the same subcategory."""
    n = catalog.num_products
    degree = rng.integers(2, 6, size=n)
    sources = np.repeat(np.arange(n), degree)
    same_brand = rng.random(len(sources)) < 0.5
    subcategory = catalog.tree.leaf_subcategory[catalog.product_leaf]
    by_brand = _GroupSampler(catalog.product_brand, catalog.popularity, len(catalog.brand_names))
    by_subcategory = _GroupSampler(subcategory, catalog.popularity, len(catalog.tree.subcategory_names))
    targets = np.where(
        same_brand,
        by_brand.sample(rng, catalog.product_brand[sources]),
        by_subcategory.sample(rng, subcategory[sources]),
    )
    pairs = np.unique(np.stack([sources, targets], axis=1)[sources != targets], axis=0)
    offsets = np.searchsorted(pairs[:, 0], np.arange(n + 1))
    return _Relations(pairs[:, 0], pairs[:, 1], offsets)


def _make_users(rng: np.random.Generator, catalog: _Catalog, num_users: int) -> _Users:
    """Favourite leaves come from a popular product's leaf; favourite brands make products in them."""
    overall = _GroupSampler(np.zeros(catalog.num_products, dtype=int), catalog.popularity, 1)
    by_leaf = _GroupSampler(catalog.product_leaf, catalog.popularity, len(catalog.tree.leaf_paths))
    leaf_choices = catalog.product_leaf[overall.sample(rng, np.zeros(2 * num_users, dtype=int))].reshape(num_users, 2)
    brand_choices = catalog.product_brand[by_leaf.sample(rng, leaf_choices.ravel())].reshape(num_users, 2)
    # Half of the users have a single favourite leaf, half a single favourite brand.
    single_leaf = rng.random(num_users) < 0.5
    single_brand = rng.random(num_users) < 0.5
    leaf_choices[single_leaf, 1] = leaf_choices[single_leaf, 0]
    brand_choices[single_brand, 1] = brand_choices[single_brand, 0]
    return _Users(leaf_choices=leaf_choices, brand_choices=brand_choices)


def _make_interactions(
    rng: np.random.Generator,
    catalog: _Catalog,
    users: _Users,
    also_bought: _Relations,
    events_per_user: int,
) -> dict[str, np.ndarray]:
    """Visits (a product seen at a time) expanded into funnel events; returns index arrays sorted by time."""
    num_users = len(users.leaf_choices)
    funnel_length = 1 + P_CLICK * (1 + P_CART * (1 + P_PURCHASE))  # expected events per visit, by level
    events_per_visit = PREFERRED_SHARE * funnel_length[1] + (1 - PREFERRED_SHARE) * funnel_length[0]
    mean_visits = max(1.0, events_per_user / events_per_visit)
    visits_per_user = 1 + rng.poisson(mean_visits - 1, size=num_users)
    user = np.repeat(np.arange(num_users), visits_per_user)
    num_visits = len(user)
    time = START_EPOCH + np.floor(rng.random(num_visits) * SPAN_SECONDS).astype(np.int64)
    order = np.lexsort((time, user))
    user, time = user[order], time[order]

    # Which product each visit sees: a favourite leaf, a favourite brand, or anything popular.
    preferred = rng.random(num_visits) < PREFERRED_SHARE
    via_leaf = rng.random(num_visits) < 0.5
    pick = rng.integers(2, size=num_visits)
    # Within a favourite, taste beats hype: a flatter popularity, so the tail gets found too.
    within = catalog.popularity**WITHIN_FAVOURITE_POPULARITY
    by_leaf = _GroupSampler(catalog.product_leaf, within, len(catalog.tree.leaf_paths))
    by_brand = _GroupSampler(catalog.product_brand, within, len(catalog.brand_names))
    overall = _GroupSampler(np.zeros(catalog.num_products, dtype=int), catalog.popularity, 1)
    product = np.where(
        via_leaf,
        by_leaf.sample(rng, users.leaf_choices[user, pick]),
        by_brand.sample(rng, users.brand_choices[user, pick]),
    )
    product = np.where(preferred, product, overall.sample(rng, np.zeros(num_visits, dtype=int)))

    # Some visits follow an also_bought of the user's previous visit.
    previous = np.concatenate([[0], product[:-1]])
    degree = np.diff(also_bought.offsets)[previous]
    follow = (rng.random(num_visits) < FOLLOW_ALSO_BOUGHT) & (degree > 0)
    follow[1:] &= user[1:] == user[:-1]
    follow[0] = False
    chosen = also_bought.offsets[previous] + (rng.random(num_visits) * np.maximum(degree, 1)).astype(np.int64)
    product = np.where(follow, also_bought.targets[np.minimum(chosen, len(also_bought.targets) - 1)], product)
    preferred |= follow

    # The funnel: view → click → cart → purchase, each a few seconds to an hour after the last.
    level = preferred.astype(int)
    clicked = rng.random(num_visits) < P_CLICK[level]
    carted = clicked & (rng.random(num_visits) < P_CART[level])
    purchased = carted & (rng.random(num_visits) < P_PURCHASE[level])
    click_time = time + rng.integers(5, 120, size=num_visits)
    cart_time = click_time + rng.integers(30, 600, size=num_visits)
    purchase_time = cart_time + rng.integers(60, 3600, size=num_visits)
    steps = [(np.ones(num_visits, bool), time), (clicked, click_time), (carted, cart_time), (purchased, purchase_time)]
    events = {
        "user": np.concatenate([user[mask] for mask, _ in steps]),
        "product": np.concatenate([product[mask] for mask, _ in steps]),
        "event": np.concatenate([np.full(mask.sum(), step) for step, (mask, _) in enumerate(steps)]),
        "time": np.concatenate([t[mask] for mask, t in steps]),
    }
    order = np.lexsort((events["event"], events["user"], events["time"]))
    return {key: values[order] for key, values in events.items()}


def _product_frame(rng: np.random.Generator, tree: _Tree, catalog: _Catalog, product_ids: pl.Series) -> pl.DataFrame:
    n = catalog.num_products
    department = tree.leaf_department[catalog.product_leaf]
    adjective = _pick_per_department(rng, ADJECTIVES, tree.departments, department)
    variant = _pick_per_department(rng, VARIANTS, tree.departments, department)
    benefit = _pick_per_department(rng, BENEFITS, tree.departments, department)
    has_variant = pl.Series(rng.random(n) < 0.6)
    brand = pl.Series(catalog.brand_names).gather(catalog.product_brand)
    noun = pl.Series(tree.leaf_nouns).gather(catalog.product_leaf)
    subcategory = pl.Series(tree.subcategory_names).gather(tree.leaf_subcategory[catalog.product_leaf])
    # Each leaf has its own price level (3 to 150), each product varies around it.
    leaf_price = np.exp(rng.uniform(np.log(3), np.log(150), size=len(tree.leaf_paths)))
    price = np.maximum(1.0, np.round(leaf_price[catalog.product_leaf] * rng.lognormal(0.0, 0.35, size=n))) - 0.01
    frame = pl.DataFrame(
        {"brand": brand, "adjective": adjective, "noun": noun, "variant": variant, "has_variant": has_variant,
         "subcategory": subcategory, "benefit": benefit}
    )
    return frame.select(
        product_id=product_ids,
        title=pl.concat_str(
            "brand", pl.lit(" "), "adjective", pl.lit(" "), "noun",
            pl.when("has_variant").then(pl.lit(", ") + pl.col("variant")).otherwise(pl.lit("")),
        ),
        description=pl.concat_str(
            pl.when(pl.col("adjective").str.contains("^[AEIOU]")).then(pl.lit("An ")).otherwise(pl.lit("A ")),
            pl.col("adjective").str.to_lowercase(), pl.lit(" "),
            # Lower-case the noun, but keep "USB-C" and "Bluetooth" as they are spelled.
            pl.col("noun").str.to_lowercase().str.replace("usb-c", "USB-C").str.replace("bluetooth", "Bluetooth"),
            pl.lit(" from "), "brand", pl.lit(", part of our "), pl.col("subcategory").str.to_lowercase(),
            pl.lit(" range. "), "benefit",
        ),
        brand="brand",
        category=pl.Series(tree.leaf_paths).gather(catalog.product_leaf),
        price=pl.Series(price),
    )


def _pick_per_department(
    rng: np.random.Generator, words: dict[str, list[str]], departments: list[str], department: np.ndarray
) -> pl.Series:
    """For each product, a random entry of ``words[its department]``."""
    table = pl.Series([word for name in departments for word in words[name]])
    sizes = np.array([len(words[name]) for name in departments])
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    return table.gather(starts[department] + (rng.random(len(department)) * sizes[department]).astype(np.int64))


def _ids(prefix: str, count: int) -> pl.Series:
    """``P0001``, ``P0002``, ...: zero-padded so that they sort in creation order."""
    width = len(str(count))
    numbers = pl.int_range(1, count + 1, eager=True).cast(pl.Utf8).str.zfill(width)
    return (prefix + numbers).alias("id")


def _iso_timestamps(epoch_seconds: np.ndarray) -> pl.Series:
    """``2024-04-01T08:15:00Z`` strings."""
    return pl.from_epoch(pl.Series(epoch_seconds), time_unit="s").dt.strftime("%Y-%m-%dT%H:%M:%SZ")
