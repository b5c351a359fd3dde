"""The built-in synthetic shop: a catalogue, customers and a clickstream with real structure.

The generator is a small generative model of a web shop, so recommenders have something true to find:

* **Catalogue.** 8 top categories x 5 subcategories ("home/kitchen"), brands tied to a top category,
  log-normal prices per subcategory with a brand premium, titles built from per-category word lists,
  about 3% of items out of stock (they stop selling on a stock-out day), consumables that are bought
  again (``"consumable": true`` and ``"refill_days"`` in the item's attributes JSON) and new arrivals
  that launch mid-window (``"launch_date"``) and trend up after launch.
* **Customers.** A segment (``techie``, ``parent``, ...) sets a prior over top categories; each customer
  then draws their own focused preference over subcategories (Dirichlet), a latent taste vector that
  drifts over the window, a price sensitivity and an activity level (log-normal: a few heavy users).
  Some customers join late and some churn early.
* **Sessions.** Each session browses one main subcategory (plus an occasional side trip), picks its
  items by sampling-importance-resampling: candidates drawn by Zipf popularity, resampled by
  ``exp(taste . item factors + price fit + trend)``. So a view is popularity x taste x price fit, and
  collaborative models beat popularity clearly. Items are re-viewed; a cart or fav follows the first
  view of an item, and carts are bought at a checkout at the end of the session. Seconds to minutes
  between clicks, hours to days between sessions, more traffic in the evening and at weekends.
* **Repeat purchases.** Each bought consumable is bought again every ``refill_days`` (jittered) while the
  customer stays loyal, in short "buy again" sessions: view -> cart -> buy.
* **Drift.** Top categories trend up or down and two have a seasonal bump; item popularity trends;
  new arrivals launch and spike; customers' tastes move along a private direction.
* **Bots.** ``bot_share`` of users (at most 0.5%) crawl the catalogue: hundreds of views per session,
  seconds apart. They are marked ``"bot": true`` in the users' attributes JSON (ground truth for tests).

Everything is vectorised with numpy; the only loops run over a handful of chunks or retries.
The event count is exact: sessions are generated with a small surplus and whole sessions are dropped
at random (the last one cut to a prefix, so the funnel order still holds) until ``n_events`` remain.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl

from fusionrec import schema as S

__all__ = ["Shop", "ShopConfig", "generate_shop", "write_shop"]

DAY = 86_400
HOUR = 3_600
VIEW, FAV, CART, BUY = 0, 1, 2, 3
BEHAVIORS = ("view", "fav", "cart", "buy")

# top category -> (adjectives, brands, {subcategory: (nouns, median price, refill days or 0)})
_TAXONOMY: dict[str, tuple[tuple[str, ...], tuple[str, ...], dict[str, tuple[tuple[str, ...], float, int]]]] = {
    "electronics": (
        ("Smart", "Wireless", "Compact", "Pro", "Ultra", "Portable", "Digital", "Slim"),
        ("Voltix", "Nexora", "Auralink", "Pixelon", "Quantra", "Sonique", "Zentek", "Lumiq"),
        {
            "phones": (("Smartphone", "Phone", "Handset", "Flip Phone", "Phone Mini"), 420.0, 0),
            "laptops": (("Laptop", "Notebook", "Ultrabook", "Chromebook", "Workstation"), 900.0, 0),
            "audio": (("Headphones", "Earbuds", "Speaker", "Soundbar", "Headset"), 90.0, 0),
            "cameras": (("Camera", "Action Cam", "Lens", "Webcam", "Drone"), 350.0, 0),
            "accessories": (("Charger", "USB-C Cable", "Power Bank", "Phone Case", "Screen Protector"), 20.0, 0),
        },
    ),
    "home": (
        ("Classic", "Modern", "Cozy", "Nordic", "Rustic", "Essential", "Premium", "Everyday"),
        ("Hearthly", "Casaro", "Nestwell", "Oakmere", "Brightly", "Domora", "Linea", "Purehome"),
        {
            "kitchen": (("Blender", "Kettle", "Toaster", "Knife Set", "Frying Pan", "Coffee Maker"), 45.0, 0),
            "furniture": (("Desk Chair", "Bookshelf", "Side Table", "Sofa", "Floor Lamp"), 180.0, 0),
            "bedding": (("Duvet", "Pillow", "Sheet Set", "Blanket", "Mattress Topper"), 55.0, 0),
            "decor": (("Vase", "Picture Frame", "Wall Clock", "Rug", "Mirror"), 30.0, 0),
            "cleaning": (("Laundry Detergent", "Dish Soap", "Sponges", "Surface Wipes", "Trash Bags"), 8.0, 21),
        },
    ),
    "fashion": (
        ("Slim-Fit", "Relaxed", "Vintage", "Classic", "Organic Cotton", "Lightweight", "Waterproof", "Linen"),
        ("Marlowe", "Vestra", "Nordhem", "Calloway", "Ardent", "Kinsey", "Solenne", "Urbano"),
        {
            "women": (("Dress", "Blouse", "Cardigan", "Skirt", "Jacket"), 45.0, 0),
            "men": (("Shirt", "Chinos", "Hoodie", "Blazer", "Polo"), 45.0, 0),
            "shoes": (("Sneakers", "Boots", "Loafers", "Sandals", "Running Shoes"), 75.0, 0),
            "bags": (("Backpack", "Tote Bag", "Crossbody Bag", "Wallet", "Duffel Bag"), 50.0, 0),
            "jewelry": (("Necklace", "Ring", "Bracelet", "Earrings", "Watch"), 60.0, 0),
        },
    ),
    "beauty": (
        ("Hydrating", "Gentle", "Radiant", "Matte", "Nourishing", "Fragrance-Free", "Vegan", "Daily"),
        ("Lumea", "Verdelle", "Amarine", "Skinsmith", "Rosalie", "Purelab", "Olea", "Belmonde"),
        {
            "skincare": (("Face Cream", "Serum", "Cleanser", "Sunscreen", "Toner"), 18.0, 30),
            "makeup": (("Mascara", "Lipstick", "Foundation", "Eyeliner", "Concealer"), 14.0, 45),
            "haircare": (("Shampoo", "Conditioner", "Hair Mask", "Hair Oil", "Dry Shampoo"), 10.0, 28),
            "fragrance": (("Eau de Parfum", "Eau de Toilette", "Body Mist", "Cologne", "Perfume Oil"), 55.0, 0),
            "tools": (("Hair Dryer", "Straightener", "Brush Set", "Trimmer", "Mirror Light"), 35.0, 0),
        },
    ),
    "grocery": (
        ("Organic", "Fair Trade", "Roasted", "Wholegrain", "Sugar-Free", "Artisan", "Family Pack", "Classic"),
        ("Harvesta", "Bramblewood", "Golden Acre", "Milloré", "Tidewell", "Greenfold", "Sunmeadow", "Kafé Noir"),
        {
            "coffee": (("Coffee Beans", "Ground Coffee", "Espresso Pods", "Cold Brew", "Instant Coffee"), 9.0, 14),
            "snacks": (("Granola Bars", "Crackers", "Dark Chocolate", "Trail Mix", "Crisps"), 4.0, 10),
            "beverages": (("Sparkling Water", "Green Tea", "Orange Juice", "Kombucha", "Oat Milk"), 3.5, 7),
            "pantry": (("Olive Oil", "Pasta", "Basmati Rice", "Tomato Sauce", "Honey"), 5.0, 21),
            "breakfast": (("Muesli", "Porridge Oats", "Corn Flakes", "Peanut Butter", "Jam"), 4.5, 14),
        },
    ),
    "sports": (
        ("Performance", "Lightweight", "Breathable", "All-Weather", "Pro", "Trail", "Ergonomic", "Foldable"),
        ("Stridex", "Peakform", "Velora", "Ironclad", "Trailmark", "Aerofit", "Summitra", "Kinetik"),
        {
            "fitness": (("Yoga Mat", "Dumbbell Set", "Kettlebell", "Resistance Bands", "Foam Roller"), 35.0, 0),
            "running": (("Running Jacket", "Running Tights", "GPS Watch", "Hydration Vest", "Running Socks"), 45.0, 0),
            "cycling": (("Bike Helmet", "Bike Light", "Cycling Gloves", "Bike Lock", "Saddle"), 40.0, 0),
            "outdoor": (("Tent", "Sleeping Bag", "Hiking Backpack", "Trekking Poles", "Camping Stove"), 85.0, 0),
            "nutrition": (("Whey Protein", "Energy Gel", "Protein Bars", "Electrolyte Tabs", "Creatine"), 22.0, 21),
        },
    ),
    "kids": (
        ("Colorful", "Educational", "Soft", "Classic", "Deluxe", "Mini", "Interactive", "Wooden"),
        ("Tinytown", "Brightbloom", "Kiddo", "Pipsqueak", "Wonderly", "Little Oak", "Bubbles", "Playmaze"),
        {
            "toys": (("Building Set", "Plush Bear", "Toy Car", "Doll House", "Puzzle"), 25.0, 0),
            "games": (("Board Game", "Card Game", "Memory Game", "Strategy Game", "Party Game"), 22.0, 0),
            "baby-care": (("Diapers", "Baby Wipes", "Baby Lotion", "Formula", "Baby Shampoo"), 14.0, 10),
            "books": (("Picture Book", "Story Collection", "Activity Book", "Sticker Book", "Bedtime Book"), 9.0, 0),
            "clothing": (("Romper", "Pajama Set", "Rain Jacket", "Sneakers", "Beanie"), 18.0, 0),
        },
    ),
    "pets": (
        ("Grain-Free", "Natural", "Durable", "Chewy", "Senior", "Puppy", "Indoor", "Premium"),
        ("Pawsome", "Furlong", "Tailwise", "Barkley", "Whiskerly", "Petvana", "Happy Paws", "Kibblo"),
        {
            "dog-food": (("Dry Dog Food", "Wet Dog Food", "Dog Treats", "Dental Chews", "Puppy Food"), 28.0, 21),
            "cat-food": (("Dry Cat Food", "Wet Cat Food", "Cat Treats", "Kitten Food", "Cat Milk"), 22.0, 21),
            "litter": (("Clumping Litter", "Litter Pellets", "Litter Liners", "Silica Litter", "Litter Spray"),
                       12.0, 14),
            "toys": (("Chew Toy", "Ball Launcher", "Cat Teaser", "Rope Toy", "Scratching Post"), 12.0, 0),
            "accessories": (("Dog Leash", "Pet Bed", "Collar", "Food Bowl", "Travel Carrier"), 25.0, 0),
        },
    ),
}
_TOPS = tuple(_TAXONOMY)
_SUBS = [(top, sub) for top in _TOPS for sub in _TAXONOMY[top][2]]
_SUB_TOP = np.array([_TOPS.index(top) for top, _ in _SUBS])
_COLORS = ("black", "white", "grey", "navy", "red", "green", "beige", "blue", "pink", "silver")
_PHRASES = (
    "Built for everyday use.", "A customer favourite.", "Designed to last.", "Great value for the price.",
    "Easy to use and easy to clean.", "Made with care.", "Perfect as a gift.", "Our best seller in its range.",
)
# segment -> (affinity per top category, in _TOPS order; mean price sensitivity)
_SEGMENTS: dict[str, tuple[tuple[float, ...], float]] = {
    #                electr home  fash  beauty groc sports kids pets
    "techie":       ((6.0, 1.0, 0.6, 0.3, 1.0, 1.0, 0.3, 0.3), 0.35),
    "homemaker":    ((0.6, 5.0, 0.8, 1.0, 3.0, 0.3, 1.0, 0.8), 0.50),
    "fashionista":  ((0.6, 0.8, 6.0, 3.0, 0.6, 0.6, 0.3, 0.3), 0.40),
    "parent":       ((0.6, 1.5, 0.8, 0.6, 2.0, 0.3, 6.0, 0.5), 0.55),
    "athlete":      ((1.0, 0.3, 1.2, 0.5, 1.5, 6.0, 0.2, 0.3), 0.45),
    "pet_owner":    ((0.4, 1.2, 0.4, 0.4, 1.5, 0.6, 0.3, 6.0), 0.50),
    "foodie":       ((0.4, 2.5, 0.4, 0.6, 6.0, 0.6, 0.4, 0.4), 0.45),
    "bargain_hunter": ((1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0), 0.85),
}


@dataclass(frozen=True)
class ShopConfig:
    """Size, seed and behaviour knobs of the synthetic shop; the defaults make a 200k-event demo."""

    n_users: int = 5_000
    n_items: int = 2_000
    n_events: int = 200_000  # exact, bots included
    seed: int = 0
    n_days: int = 56
    start: str = "2026-01-05"  # UTC date of the first day
    n_factors: int = 8  # latent taste dimensions
    zipf_exponent: float = 1.0  # item popularity ~ (global rank) ** -zipf_exponent
    taste_strength: float = 1.5  # weight of taste . item factors in the item choice
    category_focus: float = 6.0  # Dirichlet concentration of a user's subcategory preference: lower = narrower
    price_strength: float = 1.0  # how much price sensitivity pushes choices towards cheap items
    candidates: int = 8  # popularity-drawn candidates resampled by taste per chosen item
    mean_session_views: float = 6.0
    cart_rate: float = 0.07  # carts per view
    fav_rate: float = 0.03  # favs per view
    buy_rate: float = 0.40  # buys per cart
    repeat_rate: float = 0.7  # mean chance a consumable is bought again after each refill interval
    unavailable_share: float = 0.03  # items out of stock at the end (available=False)
    new_item_share: float = 0.06  # items launched during the window
    drift: float = 1.0  # strength of category trends, item trends and taste drift (0 = stationary)
    bot_share: float = 0.002  # share of users that are crawlers, at most 0.005
    bot_event_share: float = 0.05  # share of all events made by the bots

    def __post_init__(self) -> None:
        """Reject settings the generator cannot honour, with the field and the fix."""
        checks = [
            (self.n_users >= 10, "n_users must be at least 10"),
            (self.n_items >= 50, "n_items must be at least 50"),
            (self.n_events >= 100, "n_events must be at least 100"),
            (self.n_days >= 1, "n_days must be at least 1"),
            (0.0 <= self.bot_share <= 0.005, "bot_share must be between 0 and 0.005"),
            (0.0 <= self.bot_event_share <= 0.5, "bot_event_share must be between 0 and 0.5"),
            (0.0 < self.cart_rate < 0.5 and 0.0 <= self.fav_rate < 0.5, "cart_rate/fav_rate must be in (0, 0.5)"),
            (0.0 < self.buy_rate < 1.0 and 0.0 <= self.repeat_rate < 1.0, "buy_rate/repeat_rate must be in (0, 1)"),
            (self.mean_session_views >= 1.5, "mean_session_views must be at least 1.5"),
            (self.candidates >= 1 and self.n_factors >= 1, "candidates and n_factors must be positive"),
            (0.0 <= self.unavailable_share < 0.5 and 0.0 <= self.new_item_share < 0.5,
             "unavailable_share/new_item_share must be in [0, 0.5)"),
            (self.zipf_exponent > 0 and self.drift >= 0, "zipf_exponent must be positive and drift non-negative"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"ShopConfig: {message}")
        try:
            datetime.strptime(self.start, "%Y-%m-%d")
        except ValueError:
            raise ValueError(f"ShopConfig: start must be a date like 2026-01-05, got {self.start!r}") from None

    @property
    def start_epoch(self) -> int:
        """Seconds since the Unix epoch of the window's first midnight (UTC)."""
        return int(datetime.strptime(self.start, "%Y-%m-%d").replace(tzinfo=UTC).timestamp())


@dataclass
class Shop:
    """The three native tables of a shop: events (sorted by time), items and users."""

    events: pl.DataFrame
    items: pl.DataFrame
    users: pl.DataFrame


# -- internal state ------------------------------------------------------------------------------

@dataclass
class _Catalogue:
    """Item arrays in internal order (grouped by subcategory); ids are shuffled so they leak nothing."""

    sub: np.ndarray  # int16 subcategory per item
    sub_top: np.ndarray  # top category per subcategory
    sub_lo: np.ndarray  # first item of each subcategory (length n_sub + 1)
    pop_cum: np.ndarray  # cumulative popularity in internal order, float64, ends at 1
    sub_mass: np.ndarray  # popularity per subcategory
    guide: np.ndarray  # guide[j]: first item whose cumulative popularity exceeds j / len(guide)
    factors: np.ndarray  # (n_items, d) float32, scaled by 1/sqrt(d)
    zprice: np.ndarray  # float32 log-price standardised within the subcategory
    trend: np.ndarray  # float32 popularity trend per item (log scale per unit of drift)
    launch: np.ndarray  # float64 launch time in seconds from start (0 = always there)
    stockout: np.ndarray  # float64 time after which the item cannot be carted (inf = in stock)
    refill_days: np.ndarray  # float32, 0 = not consumable
    fallback: np.ndarray  # per subcategory: its most popular item, which is always there
    price: np.ndarray  # float64
    frame: pl.DataFrame


@dataclass
class _Population:
    """User arrays; bots are users too, but sessions come from a different process."""

    is_bot: np.ndarray
    pref: np.ndarray  # (n_users, n_sub) float32 subcategory preference, rows sum to 1
    taste: np.ndarray  # (n_users, d) float32
    taste_drift: np.ndarray  # (n_users, d) float32
    sensitivity: np.ndarray  # float32 in [0, 1]
    activity: np.ndarray  # float64 relative session rate
    window: np.ndarray  # (n_users, 2) join and leave, as fractions of the window
    loyalty: np.ndarray  # float32 chance to re-buy a consumable
    frame: pl.DataFrame


@dataclass
class _Events:
    """Columnar events in integer codes; session ids are local to the generator."""

    user: np.ndarray
    item: np.ndarray
    behavior: np.ndarray
    t: np.ndarray  # int64 seconds from start
    session: np.ndarray  # int64
    quantity: np.ndarray

    @staticmethod
    def empty() -> _Events:
        return _Events(np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.int8), np.zeros(0, np.int64),
                       np.zeros(0, np.int64), np.zeros(0, np.int32))

    @staticmethod
    def concat(parts: list[_Events]) -> _Events:
        parts = [_Events.empty(), *parts]
        return _Events(*(np.concatenate([getattr(p, f) for p in parts]) for f in
                         ("user", "item", "behavior", "t", "session", "quantity")))

    def take(self, idx: np.ndarray) -> _Events:
        return _Events(self.user[idx], self.item[idx], self.behavior[idx], self.t[idx], self.session[idx],
                       self.quantity[idx])

    def __len__(self) -> int:
        return len(self.t)


# -- public API ----------------------------------------------------------------------------------

def generate_shop(config: ShopConfig, progress: Callable[[int], None] | None = None) -> Shop:
    """Generate a shop with exactly `config.n_events` events; the same config gives identical frames.

    `progress` is called a few times with the number of events generated so far (the last call
    with `n_events`).
    """
    cfg = config
    root = np.random.SeedSequence(cfg.seed)
    cat_seq, pop_seq, bot_seq, human_seq = root.spawn(4)
    report = _Progress(cfg.n_events, progress)
    cat = _catalogue(cfg, np.random.default_rng(cat_seq))
    popn = _population(cfg, np.random.default_rng(pop_seq))
    clock = _Clock(cfg)
    n_bot_events = round(cfg.bot_event_share * cfg.n_events) if popn.is_bot.any() else 0
    bots = _bot_events(cfg, np.random.default_rng(bot_seq), cat, popn, clock, n_bot_events)
    humans, keep = _human_events(cfg, human_seq, cat, popn, clock, cfg.n_events - n_bot_events, report)
    bots.session += int(humans.session.max()) + 1 if len(humans) else 0
    keep = np.concatenate([keep, np.ones(len(bots), dtype=bool)])
    events = _Events.concat([humans, bots])
    del humans, bots
    frame = _events_frame(cfg, events, keep, cat, popn)
    report(cfg.n_events)
    return Shop(events=frame, items=cat.frame.sort(S.ITEM_ID), users=popn.frame)


def write_shop(shop: Shop, out: Path, parquet: bool = False) -> dict[str, Path]:
    """Write events/items/users as CSV (ISO-8601 UTC timestamps, e.g. 2026-01-05T10:11:12Z) or Parquet."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for name, frame in (("events", shop.events), ("items", shop.items), ("users", shop.users)):
        path = out / f"{name}.{'parquet' if parquet else 'csv'}"
        if parquet:
            frame.write_parquet(path)
        else:
            frame.write_csv(path, datetime_format="%Y-%m-%dT%H:%M:%SZ")
        paths[name] = path
    return paths


# -- catalogue and users -------------------------------------------------------------------------

def _catalogue(cfg: ShopConfig, rng: np.random.Generator) -> _Catalogue:
    """Items grouped by subcategory with prices, factors, popularity, trends and their table."""
    subs = _SUBS
    n_sub, n, d = len(subs), cfg.n_items, cfg.n_factors
    sub_top = _SUB_TOP
    # subcategory sizes vary (some ranges are deep, some shallow); every subcategory has items
    size_w = rng.lognormal(0.0, 0.5, n_sub)
    sizes = np.ones(n_sub, dtype=np.int64) + rng.multinomial(n - n_sub, size_w / size_w.sum())
    sub_lo = np.concatenate([[0], np.cumsum(sizes)])
    sub = np.repeat(np.arange(n_sub), sizes).astype(np.int16)

    # Zipf popularity over a random global rank, most popular first inside each subcategory: a few
    # blockbusters and a long tail. A guide table makes inverse-CDF draws O(1) (see _candidates).
    pop = (rng.permutation(n) + 1.0) ** -cfg.zipf_exponent
    pop = pop[np.lexsort((-pop, sub))]
    pop /= pop.sum()
    pop_cum = np.cumsum(pop)
    pop_cum[-1] = 1.0
    sub_mass = np.add.reduceat(pop, sub_lo[:-1])
    guide = np.searchsorted(pop_cum, np.arange(4 * n) / (4 * n), side="right")

    # brands: 8 per top; each brand has a price premium and a style vector shared by its items
    n_brand = len(_TAXONOMY[_TOPS[0]][1])
    top = sub_top[sub]
    brand_local = rng.integers(0, n_brand, n)
    brand_id = top * n_brand + brand_local
    brand_premium = rng.normal(0.0, 0.35, len(_TOPS) * n_brand)
    brand_style = rng.normal(0.0, 1.0, (len(_TOPS) * n_brand, d))
    factors = (0.6 * brand_style[brand_id] + 0.8 * rng.normal(0.0, 1.0, (n, d))) / math.sqrt(d)

    median = np.array([_TAXONOMY[t][2][s][1] for t, s in subs])
    log_price = np.log(median[sub]) + brand_premium[brand_id] + rng.normal(0.0, 0.45, n)
    raw = np.exp(log_price)
    price = np.where(raw >= 5.0, np.floor(raw) + 0.99, np.round(np.maximum(raw, 0.5), 2))
    lp = np.log(price)
    mean = np.add.reduceat(lp, sub_lo[:-1]) / sizes
    sq = np.add.reduceat((lp - mean[sub]) ** 2, sub_lo[:-1]) / sizes
    zprice = (lp - mean[sub]) / np.sqrt(sq + 0.05)[sub]

    horizon = cfg.n_days * DAY
    # the most popular item of each subcategory is always there, so every session can find something
    fallback = sub_lo[:-1].copy()
    movable = np.ones(n, dtype=bool)
    movable[fallback] = False
    is_new = movable & (rng.random(n) < cfg.new_item_share)
    launch = np.where(is_new, np.floor(rng.uniform(0.15, 0.85, n) * cfg.n_days) * DAY, 0.0)  # at midnight
    out = movable & ~is_new & (rng.random(n) < cfg.unavailable_share)
    stockout = np.where(out, rng.uniform(0.5, 0.95, n) * horizon, np.inf)
    trend = (rng.normal(0.0, 0.5, n) * cfg.drift).astype(np.float32)
    refill = np.array([_TAXONOMY[t][2][s][2] for t, s in subs], dtype=np.float32)[sub]

    frame = _items_frame(cfg, rng, subs, sub, top, brand_id, price, pop, launch, is_new, out, refill)
    return _Catalogue(sub=sub, sub_top=sub_top, sub_lo=sub_lo, pop_cum=pop_cum, sub_mass=sub_mass, guide=guide,
                      factors=factors.astype(np.float32), zprice=zprice.astype(np.float32), trend=trend,
                      launch=launch, stockout=stockout, refill_days=refill, fallback=fallback, price=price,
                      frame=frame)


def _items_frame(cfg: ShopConfig, rng: np.random.Generator, subs: list[tuple[str, str]], sub: np.ndarray,
                 top: np.ndarray, brand_id: np.ndarray, price: np.ndarray, pop: np.ndarray, launch: np.ndarray,
                 is_new: np.ndarray, out: np.ndarray, refill: np.ndarray) -> pl.DataFrame:
    """The catalogue table: titles "Brand Adjective Noun Model", JSON attributes, a description."""
    n = len(sub)
    noun_count = np.array([len(_TAXONOMY[t][2][s][0]) for t, s in subs])
    noun_off = np.concatenate([[0], np.cumsum(noun_count)])
    brands = np.array([b for t in _TOPS for b in _TAXONOMY[t][1]])
    adjectives = np.array([a for t in _TOPS for a in _TAXONOMY[t][0]])
    nouns = np.array([noun for t, s in subs for noun in _TAXONOMY[t][2][s][0]])
    n_adj = len(_TAXONOMY[_TOPS[0]][0])
    adj = top * n_adj + rng.integers(0, n_adj, n)
    adj2 = top * n_adj + rng.integers(0, n_adj, n)
    noun = noun_off[sub] + (rng.random(n) * noun_count[sub]).astype(np.int64)
    model = np.char.add(np.array(list("ABCDEFGHKLMPRSTVXZ"))[rng.integers(0, 18, n)],
                        rng.integers(1, 100, n).astype(str))
    color = np.array(_COLORS)[rng.integers(0, len(_COLORS), n)]
    phrase = np.array(_PHRASES)[rng.integers(0, len(_PHRASES), n)]
    # ratings follow popularity a little: content features carry some signal too
    zpop = (np.log(pop) - np.log(pop).mean()) / (np.log(pop).std() + 1e-9)
    rating = np.clip(np.round(rng.normal(4.1, 0.35, n) + 0.15 * zpop, 1), 1.0, 5.0)
    start = datetime.strptime(cfg.start, "%Y-%m-%d").date()
    launch_date = (np.datetime64(start) + (launch / DAY).astype("timedelta64[D]")).astype(str)
    paths = np.array([f"{t}/{s}" for t, s in subs])
    width = max(5, len(str(n - 1)))
    ids = rng.permutation(n)

    f = pl.DataFrame({
        "idx": ids, "brand": brands[brand_id], "adj": adjectives[adj], "adj2": adjectives[adj2],
        "noun": nouns[noun], "model": model, "category": paths[sub], "price": price, "out": out,
        "consumable": refill > 0, "refill": refill.astype(np.int32), "color": color, "rating": rating,
        "is_new": is_new, "launch": launch_date, "phrase": phrase,
    })
    attributes = pl.concat_str([
        pl.lit('{"consumable": '), _json_bool("consumable"),
        pl.lit(', "refill_days": '), pl.when(pl.col("consumable")).then(pl.col("refill").cast(pl.Utf8))
        .otherwise(pl.lit("null")),
        pl.lit(', "color": '), pl.when(pl.col("consumable")).then(pl.lit("null"))
        .otherwise(pl.concat_str([pl.lit('"'), pl.col("color"), pl.lit('"')])),
        pl.lit(', "rating": '), pl.col("rating").cast(pl.Utf8),
        pl.lit(', "launch_date": '), pl.when(pl.col("is_new")).then(pl.concat_str([pl.lit('"'), pl.col("launch"),
                                                                                    pl.lit('"')]))
        .otherwise(pl.lit("null")),
        pl.lit("}"),
    ])
    title = pl.concat_str([pl.col("brand"), pl.col("adj"), pl.col("noun"), pl.col("model")], separator=" ")
    text = pl.concat_str([
        title, pl.lit(". "), pl.col("adj2"), pl.lit(" "), pl.col("noun").str.to_lowercase(), pl.lit(" by "),
        pl.col("brand"), pl.lit(", from our "),
        pl.col("category").str.replace("/", " / ", literal=True), pl.lit(" range. "), pl.col("phrase"),
    ])
    return f.select(
        pl.concat_str([pl.lit("i"), pl.col("idx").cast(pl.Utf8).str.zfill(width)]).alias(S.ITEM_ID),
        title.alias(S.TITLE),
        pl.col("category").alias(S.CATEGORY),
        pl.col("brand").alias(S.BRAND),
        pl.col("price").alias(S.PRICE),
        (~pl.col("out")).alias(S.AVAILABLE),
        attributes.alias(S.ATTRIBUTES),
        text.alias(S.TEXT),
    )


def _json_bool(column: str) -> pl.Expr:
    return pl.when(pl.col(column)).then(pl.lit("true")).otherwise(pl.lit("false"))


def _population(cfg: ShopConfig, rng: np.random.Generator) -> _Population:
    """Users: segment, focused subcategory preferences, tastes, price sensitivity, activity, bots."""
    n, d = cfg.n_users, cfg.n_factors
    seg_names = np.array(list(_SEGMENTS))
    seg_share = np.array([3, 3, 3, 3, 2, 2, 2, 2], dtype=np.float64)
    seg = rng.choice(len(seg_names), n, p=seg_share / seg_share.sum())
    seg_aff = np.array([a for a, _ in _SEGMENTS.values()])
    seg_sens = np.array([s for _, s in _SEGMENTS.values()])

    # each user concentrates on a few subcategories: Dirichlet around the segment's prior
    base = seg_aff[seg][:, _SUB_TOP]
    base = base / base.sum(axis=1, keepdims=True)
    pref = rng.gamma(cfg.category_focus * base + 1e-3).astype(np.float32)
    pref /= pref.sum(axis=1, keepdims=True)
    pref = 0.9 * pref + 0.1 * base.astype(np.float32)  # some browsing outside the favourites

    taste = (rng.normal(0.0, 1.0, (n, d))).astype(np.float32)
    taste_drift = (rng.normal(0.0, 0.6, (n, d)) * cfg.drift).astype(np.float32)
    sens = np.clip(rng.beta(4.0, 4.0, n) + seg_sens[seg] - 0.5, 0.0, 1.0).astype(np.float32)
    activity = rng.lognormal(0.0, 0.9, n)
    # most users are there from day one, the others join later; some churn: traffic grows gently
    join = np.clip(rng.uniform(-1.5, 0.9, n), 0.0, None)
    leave = np.where(rng.random(n) < 0.3, join + rng.uniform(0.3, 1.0, n) * (1.0 - join), 1.0)
    loyalty = rng.beta(6.0, 6.0 * (1 - cfg.repeat_rate) / max(cfg.repeat_rate, 1e-3), n).astype(np.float32)

    n_bots = round(cfg.bot_share * n)
    is_bot = np.zeros(n, dtype=bool)
    is_bot[rng.choice(n, n_bots, replace=False)] = True

    width = max(6, len(str(n - 1)))
    frame = pl.DataFrame({"idx": np.arange(n), "segment": seg_names[seg], "sens": np.round(sens, 2),
                          "bot": is_bot}).select(
        pl.concat_str([pl.lit("u"), pl.col("idx").cast(pl.Utf8).str.zfill(width)]).alias(S.USER_ID),
        pl.concat_str([pl.lit('{"segment": "'), pl.col("segment"), pl.lit('", "price_sensitivity": '),
                       pl.col("sens").cast(pl.Utf8), pl.lit(', "bot": '), _json_bool("bot"), pl.lit("}")])
        .alias(S.ATTRIBUTES),
    )
    return _Population(is_bot=is_bot, pref=pref, taste=taste, taste_drift=taste_drift, sensitivity=sens,
                       activity=activity, window=np.stack([join, leave], axis=1), loyalty=loyalty, frame=frame)


# -- time ----------------------------------------------------------------------------------------

class _Clock:
    """Maps uniform 'activity time' to wall-clock seconds: evenings and weekends get more sessions.

    Activity time runs over [0, span]; its image is [0, end], and `end` leaves two hours for sessions
    to finish inside the window.
    """

    def __init__(self, cfg: ShopConfig) -> None:
        hours = np.arange(cfg.n_days * 24)
        diurnal = np.array([0.25, 0.15, 0.1, 0.08, 0.08, 0.12, 0.3, 0.55, 0.8, 0.9, 0.95, 1.0,
                            1.05, 1.0, 0.95, 0.95, 1.0, 1.1, 1.3, 1.55, 1.7, 1.6, 1.2, 0.6])
        weekday = (datetime.strptime(cfg.start, "%Y-%m-%d").weekday() + hours // 24) % 7
        intensity = diurnal[hours % 24] * np.where(weekday >= 5, 1.2, 1.0)
        horizon = cfg.n_days * DAY
        self._wall = np.arange(len(hours) + 1, dtype=np.float64) * HOUR
        cum = np.concatenate([[0.0], np.cumsum(intensity)])
        self._act = cum / cum[-1] * horizon
        self.end = float(horizon - 2 * HOUR)
        self.span = float(np.interp(self.end, self._wall, self._act))

    def wall(self, activity_time: np.ndarray) -> np.ndarray:
        return np.interp(activity_time, self._act, self._wall)


def _spaced_starts(rng: np.random.Generator, owner: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                   max_gap: float) -> np.ndarray:
    """Random start times in [lo, hi) per owner, at least min(max_gap, half the mean spacing) apart.

    `owner` must be sorted; `lo`/`hi` are per owner. Uniform spacings with a minimum gap, vectorised
    with segment cumulative sums.
    """
    n_owner = len(lo)
    k = np.bincount(owner, minlength=n_owner)
    width = hi - lo
    gap = np.minimum(max_gap, 0.5 * width / (k + 1))
    free = width - k * gap
    e = rng.exponential(1.0, len(owner))
    denom = np.bincount(owner, weights=e, minlength=n_owner) + rng.exponential(1.0, n_owner)
    first = np.concatenate([[0], np.cumsum(k)[:-1]])
    cs = np.cumsum(e)
    before = np.concatenate([[0.0], cs])[first]
    rank = np.arange(len(owner)) - first[owner]
    return lo[owner] + (cs - before[owner]) / denom[owner] * free[owner] + rank * gap[owner]


def _segment_offsets(gaps: np.ndarray, session: np.ndarray, n_sessions: int) -> np.ndarray:
    """Cumulative gaps within each session (sessions contiguous and in order); the first event gets 0."""
    counts = np.bincount(session, minlength=n_sessions)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    g = gaps.copy()
    g[first[counts > 0]] = 0
    cs = np.cumsum(g)
    return cs - cs[first[session]]


# -- sessions ------------------------------------------------------------------------------------

class _Progress:
    """Monotone progress reports in events; generation phases are mapped onto [0, n_events]."""

    def __init__(self, total: int, callback: Callable[[int], None] | None) -> None:
        self.total, self.callback, self.done = total, callback, -1

    def __call__(self, events: int) -> None:
        events = min(max(int(events), 0), self.total)
        if self.callback is not None and events > self.done:
            self.done = events
            self.callback(events)


def _human_events(cfg: ShopConfig, seq: np.random.SeedSequence, cat: _Catalogue, popn: _Population,
                  clock: _Clock, need: int, report: _Progress) -> tuple[_Events, np.ndarray]:
    """Browsing and repeat-purchase sessions, and a mask keeping exactly `need` of their events."""
    humans = np.flatnonzero(~popn.is_bot)
    per_view = 1.0 + cfg.cart_rate * (1.0 + cfg.buy_rate) + cfg.fav_rate
    # surplus covers the randomness of the count; repeat sessions add a few percent on top
    n_sessions = max(1, math.ceil(need / (cfg.mean_session_views * per_view) * 1.03) + 5)
    for attempt in range(20):
        rng = np.random.default_rng(seq.spawn(1)[0] if attempt else seq)
        events = _browse(cfg, rng, cat, popn, clock, humans, n_sessions, report, need)
        if len(events) >= need:
            return events, _trim(rng, events, need)
        n_sessions = math.ceil(n_sessions * need / max(len(events), 1) * 1.1) + 10
    raise RuntimeError("synthetic shop: could not reach n_events; raise mean_session_views or n_users")


def _trim(rng: np.random.Generator, ev: _Events, need: int) -> np.ndarray:
    """A mask that drops random whole sessions, cutting the last one to a time-ordered prefix: `need` kept."""
    n_sess = int(ev.session.max()) + 1
    counts = np.bincount(ev.session, minlength=n_sess)
    order = rng.permutation(n_sess)
    cum = np.cumsum(counts[order])
    n_full = int(np.searchsorted(cum, need, side="right"))
    keep = np.zeros(n_sess, dtype=bool)
    keep[order[:n_full]] = True
    mask = keep[ev.session]
    left = need - (int(cum[n_full - 1]) if n_full else 0)
    if left:
        part = np.flatnonzero(ev.session == order[n_full])
        part = part[np.argsort(ev.t[part], kind="stable")][:left]
        mask[part] = True
    return mask


def _browse(cfg: ShopConfig, rng: np.random.Generator, cat: _Catalogue, popn: _Population, clock: _Clock,
            humans: np.ndarray, n_sessions: int, report: _Progress, need: int) -> _Events:
    """`n_sessions` browsing sessions of human users plus the repeat purchases they trigger."""
    horizon = cfg.n_days * DAY
    # active windows are fractions of the activity span, at least a day so late joiners get a session in
    span = clock.span
    lo = np.clip(np.minimum(popn.window[:, 0] * span, span - DAY), 0.0, None)
    hi = np.clip(np.maximum(popn.window[:, 1] * span, lo + min(DAY, span / 2)), None, span)
    # who: sessions follow activity x time in the shop, so traffic stays level as users come and go
    act = popn.activity[humans] * (hi - lo)[humans]
    user = np.sort(humans[rng.choice(len(humans), n_sessions, p=act / act.sum())])
    starts_act = _spaced_starts(rng, user, lo, hi, 4.0 * HOUR)
    start = np.floor(clock.wall(starts_act)).astype(np.int64)
    frac = (start / horizon).astype(np.float32)
    day = np.minimum(start // DAY, cfg.n_days - 1)

    # what: one main subcategory per session (user preference x seasonal drift) and a side trip
    season = _seasonality(cfg, rng, cat)
    main, side = _draw_subcategories(rng, popn.pref, season, user, day)
    m = cfg.mean_session_views - 1.0
    views = np.minimum(1 + rng.negative_binomial(1.3, 1.3 / (1.3 + m), n_sessions), 60)  # < 64: see `key`
    pool = np.maximum(1, np.ceil(views * rng.uniform(0.5, 0.95, n_sessions))).astype(np.int64)
    pool_off = np.concatenate([[0], np.cumsum(pool)])
    n_pool = int(pool_off[-1])
    p_sess = np.repeat(np.arange(n_sessions, dtype=np.int32), pool)
    p_first_slot = np.zeros(n_pool, dtype=bool)
    p_first_slot[pool_off[:-1]] = True
    p_sub = np.where(p_first_slot | (rng.random(n_pool) < 0.85), main[p_sess], side[p_sess])
    u_vec = popn.taste[user] + frac[:, None] * popn.taste_drift[user]
    p_item, p_fit = _choose_items(cfg, rng, cat, popn, u_vec, user, start, p_sess, p_sub, report, need)

    # an item picked twice in a session is one item seen twice: only its first slot can convert.
    # Sorting packed (session, item, slot) values is much faster than an argsort.
    key = ((p_sess.astype(np.int64) * len(cat.sub) + p_item) << 6) + (np.arange(n_pool) - pool_off[p_sess])
    key.sort()
    pair = key >> 6
    first = np.empty(n_pool, dtype=bool)
    first[pool_off[pair // len(cat.sub)] + (key & 63)] = np.concatenate([[True], pair[1:] != pair[:-1]])
    del key, pair

    # views: slot j is first seen at position j, later positions re-view random slots
    n_views = int(views.sum())
    v_sess = np.repeat(np.arange(n_sessions, dtype=np.int32), views)
    v_pos = (np.arange(n_views) - np.repeat(np.cumsum(views) - views, views)).astype(np.int32)
    revisit = v_pos >= pool[v_sess]
    v_local = np.where(revisit, (rng.random(n_views) * pool[v_sess]).astype(np.int32), v_pos)
    v_slot = pool_off[v_sess] + v_local
    del v_pos, v_local
    seen = np.bincount(v_slot, minlength=n_pool)

    # funnel: affinity and repeated looks raise cart odds; price-sensitive users abandon dear carts
    p_user = user[p_sess]
    sens = popn.sensitivity[p_user]
    z = cat.zprice[p_item]
    stocked = (start[p_sess] < cat.stockout[p_item])
    can = first & stocked
    x_cart = 0.8 * p_fit + 0.35 * (seen - 1)
    cart = can & (rng.random(n_pool) < _calibrated(x_cart, can, cfg.cart_rate * n_views))
    fav = first & (rng.random(n_pool) < _calibrated(0.8 * p_fit, first, cfg.fav_rate * n_views))
    x_buy = 0.6 * p_fit - 0.8 * (sens - 0.5) * 2.0 * z
    buy = cart & (rng.random(n_pool) < _calibrated(x_buy, cart, cfg.buy_rate * cart.sum()))
    consumable = cat.refill_days[p_item] > 0
    # durable goods are rarely bought twice: most second purchases of the same item are abandoned
    b_slot = np.flatnonzero(buy)
    b_key = p_user[b_slot].astype(np.int64) * len(cat.sub) + p_item[b_slot]
    o = np.lexsort((start[p_sess[b_slot]], b_key))
    again = np.zeros(len(b_slot), dtype=bool)
    again[o[1:]] = b_key[o[1:]] == b_key[o[:-1]]
    buy[b_slot[again & ~consumable[b_slot] & (rng.random(len(b_slot)) < 0.9)]] = False
    qty = np.where(consumable, 1 + (rng.random(n_pool) < 0.3) + (rng.random(n_pool) < 0.1),
                   1 + ((rng.random(n_pool) < 0.05) & (cat.price[p_item] < 30))).astype(np.int32)

    # browse block: each view, then a fav and/or cart of it when its slot converts there
    at_first = ~revisit & first[v_slot]
    extra = np.where(at_first, fav[v_slot].astype(np.int64) + cart[v_slot], 0)
    rep = 1 + extra
    e_view = np.repeat(np.arange(n_views, dtype=np.int32), rep)
    k = (np.arange(len(e_view)) - np.repeat(np.cumsum(rep) - rep, rep)).astype(np.int8)
    del extra, rep, at_first, revisit
    e_slot = v_slot[e_view]
    e_beh = np.where(k == 0, VIEW, np.where((k == 1) & fav[e_slot], FAV, CART)).astype(np.int8)
    e_sess = v_sess[e_view]
    del e_view, v_slot, v_sess
    gaps = np.where(k == 0, np.clip(rng.lognormal(math.log(25.0), 0.8, len(k)), 3, 240),
                    rng.integers(2, 20, len(k))).astype(np.int64)
    del k
    e_t = start[e_sess] + _segment_offsets(gaps, e_sess, n_sessions)
    del gaps
    last = e_t[np.cumsum(np.bincount(e_sess, minlength=n_sessions)) - 1]  # every session has a view

    # checkout: the carted items that are bought, after the browsing, one order line per second
    b_slot = np.flatnonzero(buy)
    b_sess = p_sess[b_slot]
    b_rank = np.arange(len(b_slot)) - np.searchsorted(b_sess, b_sess, side="left")
    b_t = last[b_sess] + rng.integers(30, 300, n_sessions)[b_sess] + b_rank

    browse = _Events(user=user[e_sess].astype(np.int32), item=p_item[e_slot].astype(np.int32), behavior=e_beh,
                     t=e_t, session=e_sess.astype(np.int64), quantity=np.where(e_beh == CART, qty[e_slot], 1))
    checkout = _Events(user=user[b_sess].astype(np.int32), item=p_item[b_slot].astype(np.int32),
                       behavior=np.full(len(b_slot), BUY, dtype=np.int8), t=b_t, session=b_sess.astype(np.int64),
                       quantity=qty[b_slot])
    refills = _refills(cfg, rng, cat, popn, checkout, clock.end, first_session=n_sessions)
    return _Events.concat([browse, checkout, refills])


def _seasonality(cfg: ShopConfig, rng: np.random.Generator, cat: _Catalogue) -> np.ndarray:
    """Per day and subcategory demand multiplier: top categories trend and two have a bump."""
    n_top = len(_TOPS)
    f = (np.arange(cfg.n_days) + 0.5) / cfg.n_days
    slope = rng.permutation(np.linspace(-0.5, 0.5, n_top))  # some categories rise, as many fall
    bump = np.zeros(n_top)
    bump[rng.choice(n_top, 2, replace=False)] = 0.8
    centre = rng.uniform(0.3, 0.8, n_top)
    log_m = slope[None, :] * (2 * f[:, None] - 1) + bump[None, :] * np.exp(-(((f[:, None] - centre) / 0.1) ** 2))
    return np.exp(cfg.drift * log_m[:, cat.sub_top]).astype(np.float32)


def _draw_subcategories(rng: np.random.Generator, pref: np.ndarray, season: np.ndarray, user: np.ndarray,
                        day: np.ndarray, chunk: int = 250_000) -> tuple[np.ndarray, np.ndarray]:
    """Two inverse-CDF draws per session (main, side trip) from preference x season, in chunks."""
    out = np.empty((2, len(user)), dtype=np.int64)
    n_sub = pref.shape[1]
    for lo in range(0, len(user), chunk):
        u, dd = user[lo:lo + chunk], day[lo:lo + chunk]
        c = np.cumsum(pref[u] * season[dd], axis=1)
        for j in range(2):
            r = rng.random(len(u), dtype=np.float32) * c[:, -1]
            out[j, lo:lo + chunk] = np.minimum((c < r[:, None]).sum(axis=1), n_sub - 1)
    return out[0], out[1]


def _choose_items(cfg: ShopConfig, rng: np.random.Generator, cat: _Catalogue, popn: _Population,
                  u_vec: np.ndarray, user: np.ndarray, start: np.ndarray, p_sess: np.ndarray, p_sub: np.ndarray,
                  report: _Progress, need: int, chunk: int = 300_000) -> tuple[np.ndarray, np.ndarray]:
    """Sampling-importance-resampling: popularity-drawn candidates resampled by taste, price fit, trend.

    Returns the chosen item per slot and its fit (taste + price term, for the funnel).
    """
    n, k, horizon = len(p_sess), cfg.candidates, cfg.n_days * DAY
    items = np.empty(n, dtype=np.int64)
    fit = np.empty(n, dtype=np.float32)
    for lo in range(0, n, chunk):
        s, c = p_sess[lo:lo + chunk], p_sub[lo:lo + chunk]
        m = len(s)
        cand = _candidates(rng, cat, c, k)
        taste = np.matmul(cat.factors[cand], u_vec[s][:, :, None])[:, :, 0]
        sens = popn.sensitivity[user[s]]
        price = -cfg.price_strength * (2.0 * sens - 1.0)[:, None] * cat.zprice[cand]
        t = start[s].astype(np.float64)
        since = (t[:, None] - cat.launch[cand]) / DAY
        new_boost = np.where(cat.launch[cand] > 0, 2.0 * np.exp(-np.maximum(since, 0) / 7.0) + 0.5, 0.0)
        f_t = (2.0 * t / horizon - 1.0).astype(np.float32)
        drift = cat.trend[cand] * f_t[:, None] + cfg.drift * new_boost
        score = cfg.taste_strength * taste + price
        w = np.exp(score + drift) * (since >= 0)
        pick = np.argmax(w / (rng.standard_exponential((m, k), dtype=np.float32) + 1e-12), axis=1)
        rows = np.arange(m)
        chosen = cand[rows, pick]
        ok = w[rows, pick] > 0
        items[lo:lo + m] = np.where(ok, chosen, cat.fallback[c])
        fit[lo:lo + m] = np.where(ok, score[rows, pick], 0.0)
        report(int(need * 0.9 * (lo + m) / n))
    return items, fit


def _candidates(rng: np.random.Generator, cat: _Catalogue, sub: np.ndarray, k: int) -> np.ndarray:
    """`k` items per row drawn by popularity inside the row's subcategory: (len(sub), k) indices.

    Inverse CDF with a guide table (Chen and Asau): start at the guide entry of the draw's bucket and
    step forward; a bucket holds about one item, so the loop runs a few times over ever fewer draws.
    """
    base = np.concatenate([[0.0], cat.pop_cum])[cat.sub_lo[sub]]
    r = (base[:, None] + rng.random((len(sub), k)) * cat.sub_mass[sub][:, None]).ravel()
    np.minimum(r, np.nextafter(1.0, 0.0), out=r)  # pop_cum ends at exactly 1.0, so every walk stops
    guide = cat.guide
    i = guide[np.minimum((r * len(guide)).astype(np.int64), len(guide) - 1)]
    todo = np.flatnonzero(cat.pop_cum[i] <= r)
    while todo.size:
        i[todo] += 1
        todo = todo[cat.pop_cum[i[todo]] <= r[todo]]
    # rounding at a subcategory's edge can land one item off: keep every draw inside its subcategory
    lo, hi = cat.sub_lo[sub][:, None], cat.sub_lo[sub + 1][:, None] - 1
    return np.clip(i.reshape(len(sub), k), lo, hi)


def _calibrated(x: np.ndarray, mask: np.ndarray, target: float) -> np.ndarray:
    """Probabilities sigmoid(b + x) with b set so that their sum over `mask` is `target` (Newton steps)."""
    xm = x[mask].astype(np.float64)
    if len(xm) == 0 or target <= 0:
        return np.zeros(len(x))
    # a strided subsample fixes the intercept as well as all rows, at a fraction of the cost
    step = max(1, len(xm) // 200_000)
    target = target * len(xm[::step]) / len(xm)
    xm = xm[::step]
    b = math.log(max(target, 1e-9) / max(len(xm) - target, 1e-9)) - float(np.median(xm))
    for _ in range(30):
        p = 1.0 / (1.0 + np.exp(-(b + xm)))
        gap = p.sum() - target
        slope = (p * (1 - p)).sum()
        if abs(gap) < 1e-3 * max(target, 1.0) or slope <= 0:
            break
        b -= max(-2.0, min(2.0, gap / slope))
    return 1.0 / (1.0 + np.exp(-(b + x)))


def _refills(cfg: ShopConfig, rng: np.random.Generator, cat: _Catalogue, popn: _Population, buys: _Events,
             end: float, first_session: int, max_refills: int = 12) -> _Events:
    """Repeat purchases of bought consumables: short view -> cart -> buy sessions every refill interval."""
    parent = np.flatnonzero(cat.refill_days[buys.item] > 0)
    if len(parent) == 0:
        return _Events.empty()
    u, it = buys.user[parent], buys.item[parent]
    period = cat.refill_days[it] * DAY * rng.lognormal(0.0, 0.2, len(parent))
    steps = period[:, None] * rng.lognormal(0.0, 0.15, (len(parent), max_refills))
    t = buys.t[parent][:, None] + np.cumsum(steps, axis=1)
    stay = np.cumprod(rng.random((len(parent), max_refills)) < popn.loyalty[u][:, None], axis=1).astype(bool)
    leave = popn.window[u, 1] * cfg.n_days * DAY + 7 * DAY
    alive = stay & (t < end) & (t < cat.stockout[it][:, None]) & (t < leave[:, None])
    row, _ = np.nonzero(alive)
    n = len(row)
    t0 = np.floor(t[alive]).astype(np.int64)
    t_cart = t0 + rng.integers(5, 60, n)
    t_buy = t_cart + rng.integers(20, 180, n)
    session = first_session + np.arange(n, dtype=np.int64)
    qty = buys.quantity[parent][row]
    return _Events(
        user=np.repeat(u[row], 3), item=np.repeat(it[row], 3),
        behavior=np.tile(np.array([VIEW, CART, BUY], dtype=np.int8), n),
        t=np.stack([t0, t_cart, t_buy], axis=1).ravel(), session=np.repeat(session, 3),
        quantity=np.stack([np.ones(n, dtype=np.int32), qty, qty], axis=1).ravel(),
    )


def _bot_events(cfg: ShopConfig, rng: np.random.Generator, cat: _Catalogue, popn: _Population, clock: _Clock,
                n_events: int) -> _Events:
    """Crawlers: long view-only sessions over random launched items, one to three seconds apart."""
    bots = np.flatnonzero(popn.is_bot)
    if n_events == 0 or len(bots) == 0:
        return _Events.empty()
    share = rng.dirichlet(np.full(len(bots), 10.0))
    per_bot = rng.multinomial(n_events, share)
    n_sess = np.maximum(1, np.ceil(per_bot / rng.uniform(200, 800, len(bots)))).astype(np.int64)
    sess_bot = np.repeat(np.arange(len(bots)), n_sess)
    sess_off = np.concatenate([[0], np.cumsum(n_sess)])
    ev_bot = np.repeat(np.arange(len(bots)), per_bot)
    ev_sess = np.sort(sess_off[ev_bot] + (rng.random(n_events) * n_sess[ev_bot]).astype(np.int64))
    n_total = int(sess_off[-1])
    lo = np.zeros(len(bots))
    hi = np.full(len(bots), clock.end)  # crawlers keep no hours: wall-clock time, no diurnal warp
    start = np.floor(_spaced_starts(rng, sess_bot, lo, hi, 6.0 * HOUR)).astype(np.int64)
    t = start[ev_sess] + _segment_offsets(rng.integers(1, 4, n_events).astype(np.int64), ev_sess, n_total)
    item = rng.integers(0, len(cat.price), n_events)
    late = cat.launch[item] > t
    item[late] = cat.fallback[rng.integers(0, len(cat.fallback), int(late.sum()))]
    return _Events(user=bots[sess_bot[ev_sess]].astype(np.int32), item=item.astype(np.int32),
                   behavior=np.full(n_events, VIEW, dtype=np.int8), t=t.astype(np.int64), session=ev_sess,
                   quantity=np.ones(n_events, dtype=np.int32))


# -- output --------------------------------------------------------------------------------------

def _events_frame(cfg: ShopConfig, ev: _Events, keep: np.ndarray, cat: _Catalogue,
                  popn: _Population) -> pl.DataFrame:
    """The kept events sorted by time, codes turned into the schema's ids; sessions numbered by start."""
    # sorting values is far faster than argsort: pack (time, position) into one int64 and unpack
    n = max(len(ev), 1)
    idx = np.flatnonzero(keep)
    key = ev.t[idx] * n + idx
    del idx
    key.sort()
    ev = ev.take(key % n)
    del key
    n_sess = int(ev.session.max()) + 1 if len(ev) else 1
    never = np.iinfo(np.int64).max
    begin = np.full(n_sess, never, dtype=np.int64)
    np.minimum.at(begin, ev.session, ev.t)
    used = np.flatnonzero(begin < never)
    skey = begin[used] * n_sess + used
    skey.sort()
    number = np.zeros(n_sess, dtype=np.int64)
    number[skey % n_sess] = np.arange(len(used))
    width = max(6, len(str(max(len(used) - 1, 0))))
    sessions = pl.select(pl.concat_str([pl.lit("s"), pl.Series(np.arange(len(used))).cast(pl.Utf8).str.zfill(width)]))
    micros = (ev.t + cfg.start_epoch) * 1_000_000
    # the items frame is still in internal order here, so an internal index gathers its id directly
    return pl.DataFrame({
        S.USER_ID: popn.frame[S.USER_ID].gather(ev.user),
        S.ITEM_ID: cat.frame[S.ITEM_ID].gather(ev.item),
        S.BEHAVIOR: pl.Series(BEHAVIORS).gather(ev.behavior),
        S.TIMESTAMP: pl.Series(micros).cast(pl.Datetime("us", "UTC")),
        S.SESSION_ID: sessions.to_series().gather(number[ev.session]),
        S.QUANTITY: pl.Series(ev.quantity, dtype=pl.Int32),
        S.PRICE: pl.Series(cat.price[ev.item], dtype=pl.Float64),
    })
