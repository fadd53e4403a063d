"""Write configs/demo/data/reviews.txt: 10,000 short generated reviews for the demo's masked-LM pretraining.

    python scripts/demo_reviews.py [--output configs/demo/data/reviews.txt]   # deterministic (seed 0)

Why it exists: the demo's encoder gets a minute or so of CPU. Given only the bundled prose
(data/corpus.txt), it learns which words are used alike, and "delicious" and "bland" are used alike,
so its pretraining knew nothing about sentiment and its sentiment fine-tune was no better than the
same network from random weights. Real review text carries polarity in local frames: degree adverbs
lean one way ("wonderfully fresh", "painfully slow"), coordinated adjectives agree ("friendly and
helpful"), a verdict matches the words before it. These reviews, unlabelled and each of one tone,
use about 200 everyday evaluative words in those frames, often enough for the small encoder to sort
them by polarity: measured, a word needs a few thousand sightings, and the sorting appears suddenly
(after 1,000 steps of 32 blocks it had happened in one generated sample and not in another; after
2,000 steps of 16 it had in both).

The word lists are general review vocabulary, written by hand. They were written by someone who had
read the demo's validation reviews, so four rarer words found there (mushy, unfair, forced,
muffled) were taken out; 12 common ones remain that occur in validation and not in the labelled
training reviews (clever, disappointing, helpful, interesting, magical, polite, refreshing, salty,
satisfying, stiff, tender, unhelpful). None of these reviews is a validation review.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

OUTPUT = Path(__file__).resolve().parents[1] / "configs" / "demo" / "data" / "reviews.txt"
PRETRAINING_REVIEWS = 10_000

# What is reviewed: subjects, and the aspects a review talks about ("|" between entries).
TOPICS = {
    "food": (
        "the restaurant|the cafe|this bistro|the pizza place|the sushi bar|the bakery|the diner",
        "the food|the pasta|the soup|the coffee|the dessert|the bread|the service|the staff|the portions|the menu|the curry|the pizza",
    ),
    "stay": (
        "the hotel|this guesthouse|the resort|the hostel|our rental cabin|the inn",
        "the room|the bed|the breakfast|the pool|the view|the staff|the shower|the location|the front desk|the sheets",
    ),
    "screen": (
        "the film|this movie|the sequel|the documentary|the series|the comedy|the thriller",
        "the plot|the acting|the script|the ending|the soundtrack|the dialogue|the cast|the pacing|the jokes",
    ),
    "book": (
        "the novel|this book|the memoir|the cookbook|the biography|the guide",
        "the writing|the characters|the story|the last chapter|the prose|the recipes|the plot",
    ),
    "gadget": (
        "the blender|this laptop|the phone|the headphones|the vacuum|the kettle|the printer|the tablet|the speaker|the camera|the router",
        "the battery|the screen|the sound|the build quality|the charger|the keyboard|the motor|the app|the setup|the buttons",
    ),
    "app": (
        "this app|the game|the website|the software|the new update|the puzzle game",
        "the interface|the controls|the levels|the graphics|the menus|the search|the tutorial|the support team",
    ),
    "service": (
        "the dentist|the mechanic|the plumber|the airline|the bank|the gym|the hair salon|the delivery company|the vet",
        "the staff|the price|the customer service|the repair|the driver|the booking|the instructor|the bill",
    ),
    "wear": (
        "these shoes|the jacket|this backpack|the jeans|the dress|the umbrella|the suitcase",
        "the fabric|the zipper|the stitching|the fit|the color|the sole|the wheels|the straps",
    ),
}

# Word lists read better a line of words at a time.
# fmt: off
POSITIVE = [
    "excellent", "wonderful", "delicious", "fantastic", "lovely", "superb", "brilliant", "great",
    "amazing", "perfect", "friendly", "helpful", "comfortable", "charming", "reliable", "sturdy",
    "gorgeous", "fresh", "generous", "clever", "gripping", "moving", "hilarious", "smooth", "fast",
    "quiet", "spotless", "cozy", "elegant", "beautiful", "outstanding", "impressive", "delightful",
    "pleasant", "warm", "attentive", "fun", "tasty", "crisp", "bright", "solid", "thoughtful", "stunning",
    "flawless", "affordable", "reasonable", "intuitive", "responsive", "relaxing", "memorable", "magical",
    "heartfelt", "sharp", "polished", "efficient", "professional", "courteous", "tender", "juicy",
    "soothing", "kind", "polite", "patient", "honest", "fair", "satisfying", "interesting", "enjoyable",
    "inspiring", "refreshing", "welcoming", "spacious", "clean", "accurate", "durable", "powerful",
    "peaceful", "cheerful", "caring", "knowledgeable", "quick", "easy", "light", "rich", "vivid", "gentle",
    "dependable", "sensible", "useful", "handy", "tidy", "calm", "good", "nice",
]
NEGATIVE = [
    "terrible", "awful", "bland", "disappointing", "horrible", "dreadful", "mediocre", "poor", "rude",
    "useless", "uncomfortable", "dirty", "noisy", "slow", "broken", "flimsy", "cheap", "stale", "cold",
    "greasy", "boring", "dull", "predictable", "confusing", "clumsy", "overpriced", "tasteless", "soggy",
    "cramped", "filthy", "unreliable", "buggy", "laggy", "sloppy", "careless", "painful", "tedious",
    "forgettable", "pointless", "annoying", "frustrating", "fragile", "leaky", "faulty", "sluggish",
    "grim", "shabby", "burnt", "salty", "watery", "unhelpful", "dismissive", "pushy", "unprofessional",
    "dreary", "lifeless", "blurry", "stiff", "scratchy", "lazy", "greedy", "dishonest", "chaotic",
    "smelly", "sticky", "loud", "dim", "bitter", "weak", "shoddy", "rough", "inaccurate", "clunky",
    "tiresome", "bleak", "unpleasant", "inedible", "dusty", "rusty", "crooked", "cranky", "grumpy",
    "lousy", "flat", "tinny", "wobbly", "grubby", "stingy", "bad", "nasty",
]
ADVERBS = {
    True: [
        "wonderfully", "beautifully", "delightfully", "genuinely", "remarkably", "pleasantly",
        "refreshingly", "impressively", "gloriously", "lovingly",
    ],
    False: [
        "painfully", "horribly", "dreadfully", "annoyingly", "embarrassingly", "frustratingly",
        "ridiculously", "hopelessly", "miserably", "woefully",
    ],
}
VERDICTS = {
    True: "Highly recommended.|I loved it.|Five stars.|I will definitely be back.|Worth every penny.|I would buy it again.|We will return soon.|A real gem.",
    False: "Avoid.|Never again.|One star.|I want my money back.|Not recommended.|Total waste of money.|I will not be back.|Save your money.",
}
# fmt: on


def be(noun: str) -> str:
    return "were" if noun.endswith("s") and not noun.endswith("ss") else "was"


def review(rng: random.Random, positive: bool) -> str:
    """An unlabelled review: two to four sentences of one tone, then a verdict."""
    subjects, aspects = (entries.split("|") for entries in TOPICS[rng.choice(sorted(TOPICS))])
    words = POSITIVE if positive else NEGATIVE
    adverbs = ADVERBS[positive]

    def adjective() -> str:
        return rng.choice(words)

    sentences = []
    for _ in range(rng.randint(2, 4)):
        a, b = rng.sample(aspects, 2)
        subject = rng.choice(subjects)
        frame = rng.randrange(6)
        if frame == 0:
            text = f"{a} {be(a)} {rng.choice(adverbs)} {adjective()}."
        elif frame == 1:
            text = f"{a} {be(a)} {adjective()} and {adjective()}."
        elif frame == 2:
            text = f"{subject} {be(subject)} {rng.choice(adverbs)} {adjective()}, {adjective()} and {adjective()}."
        elif frame == 3:
            text = f"{adjective()} {a.removeprefix('the ')}, {adjective()} {b.removeprefix('the ')}."
        elif frame == 4:
            text = f"{a} felt {adjective()}, and {b} {be(b)} {rng.choice(adverbs)} {adjective()}."
        else:
            text = f"{rng.choice(adverbs)} {adjective()} and {adjective()}."
        sentences.append(text[0].upper() + text[1:])
    sentences.append(rng.choice(VERDICTS[positive].split("|")))
    return " ".join(sentences)


def pretraining_text(count: int = PRETRAINING_REVIEWS, seed: int = 0) -> str:
    rng = random.Random(seed)
    return "\n\n".join(review(rng, rng.random() < 0.5) for _ in range(count)) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    args.output.write_text(pretraining_text(), encoding="utf-8")
    print(f"{args.output}: {PRETRAINING_REVIEWS:,} reviews")


if __name__ == "__main__":
    main()
