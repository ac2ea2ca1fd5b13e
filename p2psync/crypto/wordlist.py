"""The 256 words of a pairing code (protocol/pairing.md §2).

Short, common, concrete English words, lowercase ASCII, 3 to 9 letters, so that a code can be read
aloud and typed on another machine without mistakes. Every word has a first three letters no other
word shares, and no word is the beginning of another, so a future completer can finish a word from
three letters. The list is part of the protocol: both machines must hold the same words, in any order
(the code carries the words themselves, not their positions), so never edit a word in place.
"""

from __future__ import annotations

# fmt: off
WORDS: tuple[str, ...] = (
    "acorn", "agent", "alarm", "album", "almond", "amber", "anchor", "animal", "antler", "apple", "apricot",
    "arrow", "aspen", "atlas", "attic", "autumn", "axle", "bacon", "badge", "baker", "bamboo", "banana",
    "barn", "basket", "beach", "beetle", "bell", "bench", "berry", "bird", "blanket", "blossom", "board",
    "book", "bottle", "box", "bread", "brick", "broom", "bubble", "bucket", "bugle", "butter", "cabin",
    "cactus", "cake", "camel", "candle", "captain", "carbon", "castle", "cavern", "cedar", "cello", "chalk",
    "cheese", "chicken", "circle", "cliff", "clockwork", "coast", "cobalt", "coconut", "coffee", "comet",
    "copper", "coral", "cotton", "crab", "cricket", "crossover", "crystal", "curtain", "daisy", "denim",
    "desert", "diamond", "domino", "donkey", "door", "dragon", "dream", "drum", "duck", "dune", "eagle",
    "earth", "echo", "elbow", "ember", "engine", "fabric", "falcon", "farmer", "feather", "fence", "ferry",
    "field", "fire", "flag", "flute", "forest", "fossil", "fox", "frog", "fruit", "funnel", "galaxy",
    "garden", "ghost", "giant", "ginger", "glove", "goat", "gravel", "guitar", "hammer", "harbor", "hat",
    "hazel", "helmet", "hill", "honey", "horizon", "hotel", "igloo", "ink", "island", "jacket", "jam",
    "jelly", "jigsaw", "jungle", "kayak", "kettle", "kitchen", "koala", "ladder", "lagoon", "lake", "lantern",
    "lava", "lemon", "letter", "lily", "lime", "linen", "lion", "lizard", "locket", "magnet", "mango",
    "maple", "marble", "meadow", "melon", "mirror", "monkey", "moon", "muffin", "needle", "nest", "nickel",
    "noodle", "ocean", "olive", "onion", "orange", "orbit", "otter", "oven", "owl", "oyster", "palace",
    "panda", "paper", "parrot", "pasta", "peach", "pebble", "pencil", "pepper", "piano", "pigeon", "pillow",
    "pine", "planet", "plum", "pocket", "pony", "potato", "puzzle", "queen", "quilt", "rabbit", "rainbow",
    "raven", "ribbon", "river", "robin", "rocket", "rubber", "saddle", "salmon", "saucer", "scarf", "school",
    "shadow", "shelf", "ship", "shovel", "silver", "sketch", "sled", "snail", "spider", "spoon", "stamp",
    "sugar", "summer", "sunset", "swan", "table", "tango", "teapot", "temple", "tennis", "thunder", "ticket",
    "tiger", "toast", "tomato", "tractor", "trumpet", "tulip", "tunnel", "turkey", "valley", "vanilla",
    "velvet", "violin", "volcano", "voyage", "wagon", "walnut", "water", "whale", "willow", "window",
    "wizard", "wolf", "yacht", "yogurt", "yolk", "zebra", "zipper",
)
# fmt: on
