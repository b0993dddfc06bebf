"""Generate recgpt's synthetic e-commerce sample: users, items and multi-behaviour histories (CC0).

    python sample_data/generate.py --seed 7 --out sample_data

Deterministic for a seed (stdlib + numpy only). Every user has 2-5 persistent interests (leaf categories, often
two leaves of one group), some have a life stage (a new baby) or a pet, everyone shops seasonally (summer, winter,
December gifts) and clicks around at random. Sessions follow a funnel: search -> click -> detail_view ->
favorite/cart -> purchase, with review_read and later ratings; consumables are re-bought on a cycle. Histories span
6-18 months and end on the reference date 2025-06-30. Ground truth (persistent + life-stage leaves) goes to
truth_interests.jsonl, never into user attributes, so prompts cannot see it.
"""

# ruff: noqa: E501  (the category table below reads best one leaf per line)
from __future__ import annotations

import argparse
import json
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np

REFERENCE_DATE = date(2025, 6, 30)
N_USERS = 300
N_ITEMS = 2000

# Leaf flags: F/M = mostly bought by women/men, C = consumable (re-bought), S = summer, W = winter, G = December gift,
# B = baby life stage, P = pet owners.  leaf: (nouns, adjectives, attributes, median price, flags)
TREE: dict[str, dict[str, dict[str, tuple[list[str], list[str], list[str], float, str]]]] = {
    "Home": {
        "Kitchen": {
            "Cookware": (["Cookware Set", "Frying Pan", "Saucepan", "Stockpot"], ["Stainless Steel", "Nonstick", "Cast Iron", "Ceramic"], ["5-Piece", "10-Piece", "28cm", "Induction Ready"], 60, ""),
            "Kitchen Knives": (["Chef's Knife", "Knife Block Set", "Paring Knife", "Santoku Knife"], ["Damascus Steel", "German Steel", "Forged", "Ultra-Sharp"], ["8-inch", "6-Piece", "With Sheath", "Ergonomic Handle"], 45, ""),
            "Coffee Makers": (["Drip Coffee Maker", "Espresso Machine", "Pour-Over Kettle", "French Press"], ["Programmable", "Compact", "Stainless Steel", "Barista-Grade"], ["12-Cup", "15-Bar", "1L", "With Milk Frother"], 90, ""),
            "Food Storage": (["Glass Food Containers", "Vacuum Seal Bags", "Bento Lunch Box", "Spice Jars"], ["Leakproof", "BPA-Free", "Stackable", "Airtight"], ["10-Pack", "24-Pack", "1.2L", "With Bamboo Lids"], 20, ""),
        },
        "Home Decor": {
            "Candles": (["Scented Candle", "Soy Candle", "Candle Gift Set", "Tealight Candles"], ["Hand-Poured", "Lavender", "Vanilla Bean", "Long-Burning"], ["300g", "3-Wick", "50-Pack", "60-Hour"], 18, "G"),
            "Throw Pillows": (["Throw Pillow Cover", "Decorative Cushion", "Lumbar Pillow"], ["Velvet", "Linen", "Boho", "Chunky Knit"], ["45x45cm", "Set of 2", "30x50cm"], 22, ""),
        },
        "Bedding": {
            "Duvet Covers": (["Duvet Cover Set", "Comforter", "Quilt Set"], ["Cotton Sateen", "Washed Linen", "Lightweight", "Organic Cotton"], ["Queen", "King", "Double", "400 Thread Count"], 55, ""),
            "Bed Pillows": (["Bed Pillow", "Memory Foam Pillow", "Body Pillow"], ["Cooling", "Hypoallergenic", "Down Alternative", "Contour"], ["Standard", "Set of 2", "King Size"], 30, ""),
        },
        "Heating & Cooling": {
            "Space Heaters": (["Space Heater", "Oil-Filled Radiator", "Ceramic Heater"], ["Quiet", "Portable", "Energy-Saving", "Oscillating"], ["1500W", "With Thermostat", "Tip-Over Protection"], 50, "W"),
            "Electric Fans": (["Tower Fan", "Desk Fan", "Pedestal Fan", "Bladeless Fan"], ["Quiet", "Oscillating", "Rechargeable", "Remote-Control"], ["40-inch", "12-Speed", "USB", "With Timer"], 40, "S"),
        },
        "Cleaning": {
            "Laundry Detergent": (["Laundry Detergent", "Laundry Pods", "Fabric Softener"], ["Fragrance-Free", "Concentrated", "Eco", "Fresh Scent"], ["3L", "60 Loads", "42-Count"], 14, "C"),
            "Cleaning Supplies": (["Microfiber Cloths", "Multi-Surface Cleaner", "Scrub Sponges", "Mop Refills"], ["Reusable", "Plant-Based", "Heavy-Duty", "Streak-Free"], ["12-Pack", "750ml", "6-Pack"], 12, "C"),
        },
    },
    "Women": {
        "Dresses": {
            "Maxi Dresses": (["Maxi Dress", "Wrap Maxi Dress", "Tiered Maxi Dress"], ["Floral", "Linen-Blend", "Boho", "Satin"], ["Short Sleeve", "V-Neck", "With Pockets", "Smocked Waist"], 45, "F"),
            "Midi Dresses": (["Midi Dress", "Shirt Dress", "Slip Dress"], ["Pleated", "Polka Dot", "Ribbed Knit", "Silky"], ["Long Sleeve", "Belted", "Square Neck"], 40, "F"),
            "Qipao Dresses": (["Qipao Dress", "Cheongsam", "Modern Qipao"], ["Silk", "Ink-Painting", "Embroidered", "Jacquard"], ["Mandarin Collar", "Short Sleeve", "Midi Length"], 70, "F"),
        },
        "Women's Outerwear": {
            "Women's Coats": (["Wool Coat", "Puffer Coat", "Trench Coat", "Teddy Coat"], ["Long", "Belted", "Oversized", "Water-Resistant"], ["Double-Breasted", "Hooded", "Knee Length"], 110, "FW"),
        },
        "Women's Swimwear": {
            "Women's Swimsuits": (["One-Piece Swimsuit", "Bikini Set", "Tankini"], ["High-Waisted", "Ribbed", "Tummy Control", "Tropical Print"], ["UPF 50+", "Padded", "Cut-Out"], 35, "FS"),
        },
        "Women's Shoes": {
            "Women's Sneakers": (["Sneakers", "Platform Sneakers", "Slip-On Sneakers"], ["White Leather", "Canvas", "Lightweight", "Chunky"], ["Memory Foam Insole", "Lace-Up", "Women's"], 60, "F"),
            "Sandals": (["Slide Sandals", "Strappy Sandals", "Espadrille Sandals"], ["Leather", "Cushioned", "Braided", "Platform"], ["Women's", "Adjustable Buckle", "Arch Support"], 35, "FS"),
        },
        "Bags": {
            "Handbags": (["Tote Bag", "Crossbody Bag", "Shoulder Bag", "Clutch"], ["Vegan Leather", "Quilted", "Woven", "Minimalist"], ["With Zip Pocket", "Large", "Chain Strap"], 65, "F"),
        },
    },
    "Men": {
        "Men's Clothing": {
            "Men's Jackets": (["Down Jacket", "Parka", "Bomber Jacket", "Fleece Jacket"], ["Insulated", "Windproof", "Packable", "Quilted"], ["Hooded", "Men's", "Slim Fit"], 95, "MW"),
            "Men's T-Shirts": (["T-Shirt", "Crew Neck Tee", "Henley Shirt"], ["Cotton", "Heavyweight", "Slim Fit", "Moisture-Wicking"], ["3-Pack", "Men's", "Short Sleeve"], 20, "M"),
            "Men's Jeans": (["Jeans", "Straight Leg Jeans", "Slim Jeans"], ["Stretch Denim", "Dark Wash", "Relaxed", "Selvedge"], ["32W 32L", "Men's", "5-Pocket"], 50, "M"),
        },
        "Men's Shoes": {
            "Men's Dress Shoes": (["Oxford Shoes", "Derby Shoes", "Loafers", "Chelsea Boots"], ["Leather", "Suede", "Classic", "Handmade"], ["Men's", "Cushioned Insole", "Goodyear Welted"], 90, "M"),
        },
        "Men's Swimwear": {
            "Men's Swim Trunks": (["Swim Trunks", "Board Shorts", "Swim Shorts"], ["Quick-Dry", "Striped", "Stretch", "Tropical Print"], ["With Mesh Lining", "7-inch", "Men's"], 25, "MS"),
        },
    },
    "Sports": {
        "Outdoor": {
            "Camping Tents": (["Camping Tent", "Backpacking Tent", "Pop-Up Tent"], ["Waterproof", "Ultralight", "Instant", "4-Season"], ["2-Person", "4-Person", "With Rainfly"], 120, ""),
            "Hiking Boots": (["Hiking Boots", "Trail Shoes", "Mid Hiking Boots"], ["Waterproof", "Leather", "Breathable", "Lightweight"], ["Vibram Sole", "Ankle Support", "Gore-Tex"], 110, ""),
            "Sleeping Bags": (["Sleeping Bag", "Mummy Sleeping Bag", "Sleeping Pad"], ["Down", "Ultralight", "3-Season", "Self-Inflating"], ["-5C Rated", "Compact", "With Stuff Sack"], 70, ""),
            "Hiking Backpacks": (["Hiking Backpack", "Daypack", "Trekking Pack"], ["Waterproof", "Lightweight", "Ventilated", "Rolltop"], ["30L", "45L", "With Rain Cover"], 65, ""),
        },
        "Fitness": {
            "Yoga Mats": (["Yoga Mat", "Yoga Block Set", "Yoga Strap"], ["Non-Slip", "Cork", "Extra Thick", "Eco TPE"], ["6mm", "183x61cm", "With Carry Strap"], 28, ""),
            "Dumbbells": (["Adjustable Dumbbells", "Dumbbell Set", "Kettlebell"], ["Cast Iron", "Neoprene", "Hex", "Quick-Select"], ["2x10kg", "24kg", "With Rack"], 80, ""),
            "Resistance Bands": (["Resistance Bands", "Pull-Up Band", "Mini Loop Bands"], ["Latex-Free", "Fabric", "Heavy-Duty"], ["Set of 5", "With Handles", "5 Levels"], 18, ""),
        },
        "Running": {
            "Running Shoes": (["Running Shoes", "Trail Running Shoes", "Racing Flats"], ["Cushioned", "Lightweight", "Carbon-Plated", "Breathable"], ["Neutral", "Stability", "Wide Fit"], 100, ""),
            "Running Apparel": (["Running Shorts", "Running Tights", "Running Vest"], ["Reflective", "Quick-Dry", "Seamless", "Breathable"], ["With Phone Pocket", "5-inch", "Compression"], 30, ""),
        },
        "Cycling": {
            "Bike Helmets": (["Bike Helmet", "Road Bike Helmet", "Commuter Helmet"], ["MIPS", "Aero", "Ventilated", "Lightweight"], ["With LED Light", "Adjustable Fit", "CE Certified"], 60, ""),
        },
        "Racket Sports": {
            "Tennis Rackets": (["Tennis Racket", "Carbon Tennis Racket", "Junior Tennis Racket"], ["Graphite", "Carbon", "Power", "Control"], ["300g", "Strung", "With Cover"], 110, ""),
            "Tennis Balls": (["Tennis Balls", "Pressureless Tennis Balls", "Tennis Overgrips"], ["Championship", "All-Court", "Tacky"], ["4-Pack", "12-Pack", "3-Can"], 9, "C"),
        },
    },
    "Beauty": {
        "Skincare": {
            "Sunscreen": (["Sunscreen", "Sunscreen Lotion", "Sunscreen Stick", "Tinted Sunscreen"], ["Mineral", "Water-Resistant", "Lightweight", "Reef-Safe"], ["SPF 50", "SPF 30", "100ml", "For Face"], 16, "S"),
            "Moisturizers": (["Face Moisturizer", "Night Cream", "Gel Cream"], ["Hydrating", "Fragrance-Free", "Ceramide", "Oil-Free"], ["50ml", "For Dry Skin", "With Hyaluronic Acid"], 25, "C"),
            "Facial Cleansers": (["Facial Cleanser", "Foaming Cleanser", "Cleansing Oil"], ["Gentle", "pH-Balanced", "Salicylic", "Hydrating"], ["150ml", "200ml", "For Sensitive Skin"], 14, "C"),
            "Serums": (["Vitamin C Serum", "Retinol Serum", "Niacinamide Serum"], ["Brightening", "Anti-Aging", "Firming", "Lightweight"], ["30ml", "10%", "With Dropper"], 30, "F"),
        },
        "Makeup": {
            "Lipstick": (["Lipstick", "Liquid Lipstick", "Lip Tint", "Lip Gloss"], ["Matte", "Long-Lasting", "Satin", "Hydrating"], ["Nude Rose", "Classic Red", "Berry"], 18, "FG"),
            "Foundation": (["Foundation", "Cushion Foundation", "BB Cream"], ["Full-Coverage", "Dewy", "Matte", "Lightweight"], ["30ml", "SPF 15", "Shade 120"], 32, "F"),
        },
        "Fragrance": {
            "Perfume": (["Eau de Parfum", "Eau de Toilette", "Perfume Gift Set"], ["Floral", "Woody", "Citrus", "Oriental"], ["50ml", "100ml", "Travel Size"], 75, "G"),
        },
        "Hair Care": {
            "Shampoo": (["Shampoo", "Conditioner", "Shampoo and Conditioner Set"], ["Sulfate-Free", "Volumizing", "Argan Oil", "Anti-Dandruff"], ["500ml", "1L", "Twin Pack"], 12, "C"),
        },
    },
    "Baby": {
        "Feeding": {
            "Baby Bottles": (["Baby Bottle", "Baby Bottle Set", "Bottle Nipples"], ["Anti-Colic", "Glass", "Wide-Neck", "BPA-Free"], ["240ml", "150ml", "3-Pack", "0-3 Months"], 20, "B"),
            "High Chairs": (["High Chair", "Booster Seat", "Convertible High Chair"], ["Foldable", "Adjustable", "Wooden", "Easy-Clean"], ["With Tray", "3-in-1", "6 Months+"], 90, "B"),
            "Baby Formula": (["Infant Formula", "Toddler Formula", "Formula Dispenser"], ["Organic", "Gentle", "Hypoallergenic", "Stage 1"], ["800g", "900g", "0-6 Months"], 30, "BC"),
        },
        "Diapering": {
            "Diapers": (["Diapers", "Pull-Up Pants", "Overnight Diapers"], ["Ultra-Soft", "Hypoallergenic", "Leak-Proof", "Eco"], ["Size 2, 84-Count", "Size 3, 120-Count", "Newborn, 64-Count"], 35, "BC"),
            "Baby Wipes": (["Baby Wipes", "Water Wipes", "Wipes Dispenser"], ["Fragrance-Free", "99% Water", "Sensitive", "Plant-Based"], ["12-Pack", "720-Count", "Travel Pack"], 15, "BC"),
        },
        "Baby Gear": {
            "Strollers": (["Stroller", "Travel System", "Compact Stroller", "Jogging Stroller"], ["Lightweight", "Reversible", "One-Hand Fold", "All-Terrain"], ["From Birth", "With Rain Cover", "Up to 22kg"], 250, "B"),
            "Car Seats": (["Infant Car Seat", "Convertible Car Seat", "Booster Car Seat"], ["ISOFIX", "Rotating", "Rear-Facing", "Side-Impact"], ["0-13kg", "Group 0+/1", "i-Size"], 180, "B"),
            "Baby Sun Hats": (["Baby Sun Hat", "Bucket Hat", "Toddler Sun Cap"], ["UPF 50+", "Wide-Brim", "Breathable", "Cotton"], ["6-12 Months", "With Chin Strap", "Adjustable"], 12, "BS"),
        },
        "Nursery": {
            "Baby Monitors": (["Video Baby Monitor", "Audio Baby Monitor", "Smart Baby Monitor"], ["Wi-Fi", "Night Vision", "Split-Screen", "Long-Range"], ["5-inch Screen", "With Temperature Sensor", "2 Cameras"], 110, "B"),
            "Baby Bath": (["Baby Bathtub", "Bath Thermometer", "Hooded Baby Towel"], ["Foldable", "Non-Slip", "Temperature-Sensing", "Organic Cotton"], ["0-24 Months", "With Newborn Sling", "2-Pack"], 25, "B"),
        },
    },
    "Electronics": {
        "Audio": {
            "Headphones": (["Over-Ear Headphones", "Noise Cancelling Headphones", "On-Ear Headphones"], ["Wireless", "Bluetooth", "Hi-Res", "Foldable"], ["40-Hour Battery", "With Mic", "USB-C"], 120, "G"),
            "Earbuds": (["Wireless Earbuds", "Sport Earbuds", "Noise Cancelling Earbuds"], ["True Wireless", "Waterproof", "Bluetooth 5.3", "Open-Ear"], ["With Charging Case", "IPX7", "30-Hour Playback"], 70, "G"),
            "Bluetooth Speakers": (["Bluetooth Speaker", "Portable Speaker", "Smart Speaker"], ["Waterproof", "Rugged", "360-Degree", "Compact"], ["20W", "IP67", "24-Hour Battery"], 60, "G"),
        },
        "Computers": {
            "Laptops": (["Laptop", "Ultrabook", "2-in-1 Laptop", "Gaming Laptop"], ["Thin and Light", "Touchscreen", "Business", "High-Performance"], ["14-inch", "16GB RAM 512GB SSD", "15.6-inch"], 900, ""),
            "Keyboards": (["Mechanical Keyboard", "Wireless Keyboard", "Ergonomic Keyboard"], ["RGB", "Low-Profile", "Hot-Swappable", "Quiet"], ["75% Layout", "Full-Size", "Brown Switches"], 70, ""),
            "Computer Mice": (["Wireless Mouse", "Gaming Mouse", "Vertical Mouse"], ["Ergonomic", "Silent", "Ultralight", "Rechargeable"], ["16000 DPI", "Bluetooth", "6 Buttons"], 35, ""),
        },
        "Phones & Accessories": {
            "Phone Cases": (["Phone Case", "Wallet Case", "MagSafe Case"], ["Clear", "Shockproof", "Slim", "Leather"], ["For iPhone 15", "For Galaxy S24", "With Card Holder"], 15, ""),
            "Phone Chargers": (["Fast Charger", "Wireless Charger", "Power Bank", "Charging Cable"], ["GaN", "Magnetic", "Braided", "Compact"], ["65W", "20000mAh", "2m", "3-in-1"], 30, ""),
        },
        "Cameras": {
            "Action Cameras": (["Action Camera", "Vlogging Camera", "360 Camera"], ["Waterproof", "Stabilized", "4K", "Compact"], ["With Mounts Kit", "60fps", "128GB Card"], 250, ""),
        },
        "Wearables": {
            "Smartwatches": (["Smartwatch", "Fitness Tracker", "GPS Running Watch"], ["AMOLED", "Waterproof", "Lightweight", "Solar"], ["With Heart Rate", "14-Day Battery", "44mm"], 150, "G"),
        },
    },
    "Pets": {
        "Dog": {
            "Dog Food": (["Dry Dog Food", "Wet Dog Food", "Puppy Food"], ["Grain-Free", "High-Protein", "Salmon", "Chicken and Rice"], ["12kg", "24 Cans", "Adult", "Small Breed"], 45, "PC"),
            "Dog Toys": (["Chew Toy", "Rope Toy", "Squeaky Toy", "Puzzle Feeder"], ["Durable", "Interactive", "Plush", "Natural Rubber"], ["For Large Dogs", "3-Pack", "For Puppies"], 12, "P"),
            "Dog Beds": (["Dog Bed", "Orthopedic Dog Bed", "Calming Dog Bed"], ["Memory Foam", "Washable", "Waterproof", "Donut"], ["Large", "Medium", "90x70cm"], 50, "P"),
        },
        "Cat": {
            "Cat Food": (["Dry Cat Food", "Wet Cat Food", "Kitten Food"], ["Grain-Free", "Indoor", "Tuna", "Sensitive Stomach"], ["4kg", "24 Pouches", "Adult"], 30, "PC"),
            "Cat Litter": (["Cat Litter", "Clumping Cat Litter", "Litter Box"], ["Unscented", "Tofu", "Low-Dust", "Odor-Control"], ["10L", "12kg", "Self-Cleaning"], 20, "PC"),
            "Cat Trees": (["Cat Tree", "Cat Scratching Post", "Cat Condo"], ["Multi-Level", "Sisal", "Modern", "Sturdy"], ["150cm", "With Hammock", "With Toy Balls"], 70, "P"),
        },
    },
    "Toys": {
        "Building Toys": {
            "Building Blocks": (["Building Blocks Set", "Magnetic Tiles", "Construction Kit"], ["Creative", "STEM", "Classic", "Deluxe"], ["500 Pieces", "100-Piece", "Ages 6+"], 40, "G"),
        },
        "Games & Puzzles": {
            "Board Games": (["Board Game", "Strategy Game", "Party Card Game"], ["Family", "Cooperative", "Award-Winning", "Classic"], ["2-6 Players", "Ages 10+", "60-Minute"], 35, "G"),
            "Jigsaw Puzzles": (["Jigsaw Puzzle", "Puzzle Mat", "3D Puzzle"], ["1000-Piece", "Landscape", "Wooden", "Glow-in-the-Dark"], ["Adults", "Ages 8+", "70x50cm"], 20, "G"),
        },
        "Plush & Dolls": {
            "Plush Toys": (["Plush Toy", "Teddy Bear", "Stuffed Animal"], ["Soft", "Giant", "Cuddly", "Glowing"], ["30cm", "60cm", "Gift Box"], 22, "G"),
        },
        "Kids' Furniture": {
            "Kids' Desks": (["Kids' Desk", "Children's Study Table", "Art Easel"], ["Adjustable", "Ergonomic", "Wooden", "Tilting"], ["With Chair", "With Storage", "Ages 3-12"], 110, "B"),
        },
    },
    "Grocery": {
        "Coffee & Tea": {
            "Coffee Beans": (["Whole Bean Coffee", "Ground Coffee", "Coffee Capsules"], ["Single-Origin", "Dark Roast", "Medium Roast", "Organic"], ["1kg", "500g", "50 Capsules"], 18, "C"),
            "Tea": (["Green Tea", "Oolong Tea", "Herbal Tea", "Loose Leaf Black Tea"], ["Premium", "Organic", "Longjing", "Chamomile"], ["100 Bags", "250g Tin", "Gift Box"], 14, "C"),
        },
        "Snacks": {
            "Nuts & Trail Mix": (["Mixed Nuts", "Trail Mix", "Roasted Almonds"], ["Unsalted", "Honey Roasted", "Protein", "Organic"], ["1kg", "Snack Packs, 24-Count", "500g"], 12, "C"),
            "Protein Bars": (["Protein Bars", "Energy Bars", "Protein Cookies"], ["Low-Sugar", "Chocolate Peanut", "Vegan", "Keto"], ["12-Pack", "24-Pack", "20g Protein"], 22, "C"),
        },
    },
}

BRANDS: dict[str, list[str]] = {
    "Home": ["Lumina", "Hearthly", "Casa Nova", "Oakridge", "Brightnest", "Kitchora", "Linen & Loom", "Pureway"],
    "Women": ["Velora", "Maison Lila", "Aurelle", "Sora", "Juniper & Co", "Silk Lane", "Jade Ink"],
    "Men": ["Northline", "Baxter & Reed", "Granite", "Holt", "Foxworth"],
    "Sports": ["Trailpeak", "Summit Gear", "Kinetiq", "Stridewell", "Ridgeway", "Apex Motion", "Courtline"],
    "Beauty": ["Dermaglow", "Pure Petal", "Solenne", "Lumiere Lab", "Velvet Bloom", "Aqua Veil"],
    "Baby": ["Little Sprout", "Tiny Nest", "Bubba & Bee", "Cuddlecare", "Sunny Cub"],
    "Electronics": ["Sonix", "Voltra", "Arcwave", "Nexon", "Pixelon", "Quanta"],
    "Pets": ["Pawsome", "Happy Tails", "Whisker Co", "Barkley", "Purrfect"],
    "Toys": ["Brickly", "Playwise", "Tumble Town", "Kiddo Lab"],
    "Grocery": ["Morning Ritual", "Green Leaf", "Harvest Hill", "Peak Fuel"],
}

CITIES = ["Hangzhou", "Shanghai", "Seattle", "Austin", "London", "Manchester", "Toronto", "Sydney", "Berlin", "Singapore",
          "Chicago", "Melbourne", "Dublin", "Vancouver", "Denver"]
BEHAVIOR_SCALE = 1.3  # sessions per user multiplier: ~60k behaviours in all


def build_leaves() -> list[dict]:
    leaves = []
    for root, subs in TREE.items():
        for sub, leafs in subs.items():
            for leaf, (nouns, adjs, attrs, price, flags) in leafs.items():
                leaves.append({"path": [root, sub, leaf], "nouns": nouns, "adjs": adjs, "attrs": attrs,
                               "price": price, "flags": flags})
    return leaves


def build_items(rng: np.random.Generator, leaves: list[dict]) -> list[dict]:
    # Leaf sizes vary (a few big categories, many small); every leaf gets at least 12 items.
    weights = rng.gamma(2.0, 1.0, len(leaves))
    sizes = np.maximum(12, np.round(weights / weights.sum() * N_ITEMS)).astype(int)
    while sizes.sum() > N_ITEMS:
        sizes[int(np.argmax(sizes))] -= 1
    while sizes.sum() < N_ITEMS:
        sizes[int(rng.integers(len(leaves)))] += 1
    ranks = rng.permutation(N_ITEMS) + 1  # global popularity rank -> Zipf-like sales
    items, seen, k = [], set(), 0
    for li, leaf in enumerate(leaves):
        root = leaf["path"][0]
        brands = list(rng.choice(BRANDS[root], size=min(4, len(BRANDS[root])), replace=False))
        leaf["item_idx"] = []
        for _ in range(sizes[li]):
            for _attempt in range(20):
                title = (f"{rng.choice(brands)} {rng.choice(leaf['adjs'])} {rng.choice(leaf['nouns'])}, "
                         f"{rng.choice(leaf['attrs'])}")
                if title not in seen:
                    break
            seen.add(title)
            brand = next(b for b in brands if title.startswith(b + " "))
            price = float(np.round(leaf["price"] * rng.lognormal(0.0, 0.35), 0) - 0.01)
            sales = int(50000 / ranks[k] ** 1.05) + int(rng.integers(0, 25))
            leaf["item_idx"].append(k)
            items.append({"item_id": f"i{k + 1:04d}", "title": title, "category": leaf["path"], "brand": brand,
                          "price": max(price, 0.99), "sales": sales, "extra": {}})
            k += 1
    return items


def leaf_fits(leaf: dict, gender: str) -> bool:
    f = leaf["flags"]
    return not (("F" in f and gender != "female") or ("M" in f and gender != "male") or "B" in f or "P" in f)


def make_user(rng: np.random.Generator, uid: str, leaves: list[dict]) -> tuple[dict, dict]:
    gender = str(rng.choice(["female", "male"], p=[0.56, 0.44]))
    age = int(np.clip(rng.normal(36, 11), 18, 72))
    attrs = {"age": age, "gender": gender, "location": str(rng.choice(CITIES))}
    # Persistent interests: pick groups (sub-categories) with affinity, one or two leaves from each.
    subs = {}
    for i, leaf in enumerate(leaves):
        if leaf_fits(leaf, gender) and "S" not in leaf["flags"] and "W" not in leaf["flags"]:
            subs.setdefault(tuple(leaf["path"][:2]), []).append(i)
    sub_keys = list(subs)
    n_interests = int(rng.integers(2, 6))
    interests: list[int] = []
    if rng.random() < 0.25:  # pet owner: a pet is a persistent interest
        pet = "Dog" if rng.random() < 0.55 else "Cat"
        pet_leaves = [i for i, lf in enumerate(leaves) if lf["path"][1] == pet]
        interests += [pet_leaves[0]] + list(rng.choice(pet_leaves[1:], size=1))
    while len(interests) < n_interests:
        group = subs[sub_keys[int(rng.integers(len(sub_keys)))]]
        take = 2 if len(group) > 1 and rng.random() < 0.35 else 1
        for i in rng.choice(group, size=min(take, len(group)), replace=False):
            if int(i) not in interests and len(interests) < n_interests:
                interests.append(int(i))
    affinity = rng.dirichlet(np.ones(len(interests)) * 2.0)
    # Life stage: a new baby for some 24-42 year olds, starting part-way through the history.
    baby: list[int] = []
    if 24 <= age <= 42 and rng.random() < 0.3:
        baby_leaves = [i for i, lf in enumerate(leaves) if "B" in lf["flags"]]
        baby = sorted(int(i) for i in rng.choice(baby_leaves, size=int(rng.integers(3, 6)), replace=False))
    months = int(rng.integers(6, 19))
    start = REFERENCE_DATE - timedelta(days=int(months * 30.4))
    plan = {"gender": gender, "interests": interests, "affinity": affinity, "baby": baby, "start": start,
            "baby_from": start + timedelta(days=int(rng.integers(0, max(1, (REFERENCE_DATE - start).days - 60)))),
            "activity": float(rng.lognormal(0.0, 0.5))}
    return {"user_id": uid, "attributes": attrs}, plan


class History:
    """Collects one user's behaviours; times only move forward within a session."""

    def __init__(self, uid: str) -> None:
        self.uid, self.rows = uid, []

    def add(self, kind: str, ts: datetime, item: dict | None = None, query: str | None = None,
            value: float | None = None) -> None:
        if ts.date() > REFERENCE_DATE:
            return
        row = {"user_id": self.uid, "type": kind, "timestamp": ts.isoformat(timespec="seconds")}
        if item is not None:
            row["item_id"] = item["item_id"]
        if query is not None:
            row["query"] = query
        if value is not None:
            row["value"] = value
        self.rows.append(row)


def pick_item(rng: np.random.Generator, leaf: dict, items: list[dict]) -> dict:
    idx = leaf["item_idx"]
    w = np.array([items[i]["sales"] for i in idx], dtype=float) ** 0.6  # popular items more likely, not only
    return items[idx[int(rng.choice(len(idx), p=w / w.sum()))]]


def search_query(rng: np.random.Generator, leaf: dict, items: list[dict]) -> str:
    noun = str(rng.choice(leaf["nouns"])).lower()
    form = rng.random()
    if form < 0.4:
        return f"{str(rng.choice(leaf['adjs'])).lower()} {noun}"
    if form < 0.7:
        return f"{noun} {str(rng.choice(leaf['attrs'])).lower()}"
    if form < 0.85:
        return f"{pick_item(rng, leaf, items)['brand'].lower()} {noun}"
    return noun


def session(rng: np.random.Generator, h: History, day: date, leaf: dict, items: list[dict], *, intent: float) -> dict | None:
    """One shopping session in a leaf; `intent` in [0,1] raises every funnel step. Returns a purchased item."""
    ts = datetime.combine(day, datetime.min.time()) + timedelta(seconds=int(rng.integers(7 * 3600, 23 * 3600)))

    def step() -> datetime:
        nonlocal ts
        ts += timedelta(seconds=int(rng.integers(20, 400)))
        return ts

    if rng.random() < 0.35 + 0.3 * intent:
        h.add("search", step(), query=search_query(rng, leaf, items))
    bought = None
    for _ in range(int(rng.integers(1, 5))):
        item = pick_item(rng, leaf, items)
        h.add("click", step(), item)
        if rng.random() > 0.45 + 0.3 * intent:
            continue
        h.add("detail_view", step(), item)
        if rng.random() < 0.3:
            h.add("review_read", step(), item)
        if rng.random() < 0.15 + 0.15 * intent:
            h.add("favorite", step(), item)
        if rng.random() < 0.12 + 0.35 * intent:
            h.add("cart", step(), item)
            if bought is None and rng.random() < 0.45 + 0.4 * intent:
                h.add("purchase", step(), item)
                bought = item
                if rng.random() < 0.25:  # a rating some days later, mostly positive
                    later = ts + timedelta(days=int(rng.integers(2, 12)), seconds=int(rng.integers(0, 9000)))
                    h.add("rating", later, item, value=float(rng.choice([1, 2, 3, 4, 5], p=[.05, .07, .15, .33, .40])))
    return bought


def history_for(rng: np.random.Generator, uid: str, plan: dict, leaves: list[dict], items: list[dict]) -> list[dict]:
    h = History(uid)
    days = (REFERENCE_DATE - plan["start"]).days
    n_sessions = max(6, int(rng.poisson(days * 0.075 * plan["activity"] * BEHAVIOR_SCALE)))
    seasonal = [i for i, lf in enumerate(leaves) if ("S" in lf["flags"] or "W" in lf["flags"])
                and leaf_fits({**lf, "flags": lf["flags"].replace("S", "").replace("W", "")}, plan["gender"])]
    gifts = [i for i, lf in enumerate(leaves) if "G" in lf["flags"]]
    consumables: dict[int, dict] = {}
    for _ in range(n_sessions):
        day = plan["start"] + timedelta(days=int(rng.integers(0, days + 1)))
        r = rng.random()
        if r < 0.62:
            li = plan["interests"][int(rng.choice(len(plan["interests"]), p=plan["affinity"]))]
            bought = session(rng, h, day, leaves[li], items, intent=0.5)
            if bought is not None and "C" in leaves[li]["flags"]:
                consumables.setdefault(li, bought)
        elif r < 0.74 and plan["baby"] and day >= plan["baby_from"]:
            li = plan["baby"][int(rng.integers(len(plan["baby"])))]
            bought = session(rng, h, day, leaves[li], items, intent=0.7)
            if bought is not None and "C" in leaves[li]["flags"]:
                consumables.setdefault(li, bought)
        elif r < 0.82:
            summer, winter, december = day.month in (6, 7, 8), day.month in (11, 12, 1, 2), day.month == 12
            if december and day.day <= 22 and rng.random() < 0.6:
                session(rng, h, day, leaves[gifts[int(rng.integers(len(gifts)))]], items, intent=0.9)
                continue
            pool = [i for i in seasonal if ("S" in leaves[i]["flags"] and summer) or ("W" in leaves[i]["flags"] and winter)]
            if pool:
                session(rng, h, day, leaves[pool[int(rng.integers(len(pool)))]], items, intent=0.8)
        else:  # noise: a few clicks somewhere random
            leaf = leaves[int(rng.integers(len(leaves)))]
            ts = datetime.combine(day, datetime.min.time()) + timedelta(seconds=int(rng.integers(6 * 3600, 24 * 3600 - 900)))
            for _ in range(int(rng.integers(1, 4))):
                ts += timedelta(seconds=int(rng.integers(5, 120)))
                h.add("click", ts, pick_item(rng, leaf, items))
    # Consumables are re-bought on a cycle of 3-7 weeks after the first purchase.
    first = {r["item_id"]: r["timestamp"] for r in h.rows if r["type"] == "purchase"}
    for item in consumables.values():
        if item["item_id"] not in first:  # its purchase fell past the reference date
            continue
        t = datetime.fromisoformat(first[item["item_id"]])
        cycle = int(rng.integers(21, 50))
        while True:
            t += timedelta(days=cycle + int(rng.integers(-4, 5)), seconds=int(rng.integers(-3600, 3600)))
            if t.date() > REFERENCE_DATE:
                break
            if rng.random() < 0.2:
                h.add("search", t - timedelta(minutes=3), query=item["title"].split(",")[0][len(item["brand"]) + 1:].lower())
            h.add("purchase", t, item)
    h.rows.sort(key=lambda r: r["timestamp"])
    return h.rows


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    leaves = build_leaves()
    items = build_items(rng, leaves)
    users, behaviors, truth = [], [], []
    for u in range(N_USERS):
        user, plan = make_user(rng, f"u{u + 1:03d}", leaves)
        users.append(user)
        behaviors += history_for(rng, user["user_id"], plan, leaves, items)
        truth.append({"user_id": user["user_id"],
                      "interests": [leaves[i]["path"][-1] for i in plan["interests"] + plan["baby"]],
                      "details": [{"leaf": leaves[i]["path"][-1], "kind": "persistent", "affinity": round(float(a), 3)}
                                  for i, a in zip(plan["interests"], plan["affinity"], strict=True)]
                      + [{"leaf": leaves[i]["path"][-1], "kind": "life_stage",
                          "since": plan["baby_from"].isoformat()} for i in plan["baby"]]})
    args.out.mkdir(parents=True, exist_ok=True)
    write_jsonl(args.out / "users.jsonl", users)
    write_jsonl(args.out / "items.jsonl", items)
    write_jsonl(args.out / "behaviors.jsonl", behaviors)
    write_jsonl(args.out / "truth_interests.jsonl", truth)
    print(f"{len(users)} users, {len(items)} items over {len(leaves)} leaf categories, {len(behaviors)} behaviours "
          f"-> {args.out}")


if __name__ == "__main__":
    main()
