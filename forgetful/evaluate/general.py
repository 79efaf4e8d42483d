"""The built-in general suite: multiple-choice skills generated from fact tables we wrote.

Each skill is a benchmark in `forgetful.evaluate.benchmarks.BENCHMARKS`, an item list in
lm-evaluation-harness's multiple-choice shape ("Question: ...\\nAnswer:", choices scored by
log-likelihood, acc and acc_norm). No benchmark text is copied: the tables below are
common knowledge written for this project. Distractors are other answers of the same
table, or wrong forms made by rule (plurals), drawn with a fixed seed per skill, so the
items are the same on every machine and run.

Skills, each at least 60 items (the suite has 816 in all, so the suite mean's 95%
interval is about ±3 points or tighter):
- `capitals`: the capital of a country; `continents`: the continent of a country.
- `opposites`: the opposite of an adjective or adverb; `plurals`: the plural of a noun.
- `numbers`: number words before/after, and numerals written in words.
- `order`: days, months and letters before/after.
- `uses`: what you use for an everyday job (physical commonsense).
- `animals`: sounds, young, homes and descriptions of animals.
- `quantities`: units and everyday counts, and the colours of things.
- `story`: who, what and where in a one-sentence story (the "Charlie the cat" cloze),
  with names, animals and places that the built-in `reading` task does not use.
"""

from __future__ import annotations

import itertools
import random

CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid",
    "Japan": "Tokyo", "China": "Beijing", "Russia": "Moscow", "Egypt": "Cairo",
    "England": "London", "Greece": "Athens", "Canada": "Ottawa", "Austria": "Vienna",
    "Portugal": "Lisbon", "Ireland": "Dublin", "Norway": "Oslo", "Sweden": "Stockholm",
    "Poland": "Warsaw", "Kenya": "Nairobi", "Peru": "Lima", "Argentina": "Buenos Aires",
    "Thailand": "Bangkok", "South Korea": "Seoul", "Finland": "Helsinki", "Cuba": "Havana",
    "Denmark": "Copenhagen", "the Netherlands": "Amsterdam", "Belgium": "Brussels",
    "Hungary": "Budapest", "the Czech Republic": "Prague", "Romania": "Bucharest",
    "Bulgaria": "Sofia", "Serbia": "Belgrade", "Croatia": "Zagreb", "Ukraine": "Kyiv",
    "Turkey": "Ankara", "Iran": "Tehran", "Iraq": "Baghdad", "Saudi Arabia": "Riyadh",
    "Lebanon": "Beirut", "Syria": "Damascus", "Jordan": "Amman", "India": "New Delhi",
    "Pakistan": "Islamabad", "Bangladesh": "Dhaka", "Nepal": "Kathmandu",
    "Afghanistan": "Kabul", "Indonesia": "Jakarta", "the Philippines": "Manila",
    "Vietnam": "Hanoi", "Malaysia": "Kuala Lumpur", "Australia": "Canberra",
    "New Zealand": "Wellington", "Mexico": "Mexico City", "Chile": "Santiago",
    "Colombia": "Bogota", "Venezuela": "Caracas", "Ecuador": "Quito",
    "Uruguay": "Montevideo", "Nigeria": "Abuja", "Ghana": "Accra", "Ethiopia": "Addis Ababa",
    "Morocco": "Rabat", "Algeria": "Algiers", "Tunisia": "Tunis", "Libya": "Tripoli",
    "Sudan": "Khartoum", "Uganda": "Kampala", "Zimbabwe": "Harare", "Senegal": "Dakar",
    "Scotland": "Edinburgh", "Wales": "Cardiff", "Iceland": "Reykjavik", "Estonia": "Tallinn",
    "Latvia": "Riga", "Lithuania": "Vilnius", "Slovakia": "Bratislava", "Mongolia": "Ulaanbaatar",
    "North Korea": "Pyongyang", "Qatar": "Doha", "Cambodia": "Phnom Penh", "Belarus": "Minsk",
    "Georgia": "Tbilisi", "Armenia": "Yerevan", "Azerbaijan": "Baku", "Albania": "Tirana",
    "Cyprus": "Nicosia", "Malta": "Valletta", "Jamaica": "Kingston", "Rwanda": "Kigali",
}
CONTINENTS = {
    "Europe": ["France", "Germany", "Italy", "Spain", "Russia", "England", "Greece",
               "Austria", "Portugal", "Ireland", "Norway", "Sweden", "Poland", "Finland",
               "Denmark", "the Netherlands", "Belgium", "Hungary", "Romania", "Bulgaria",
               "Serbia", "Croatia", "Ukraine", "Scotland", "Iceland", "Switzerland"],
    "Asia": ["Japan", "China", "Thailand", "South Korea", "India", "Pakistan", "Nepal",
             "Indonesia", "Vietnam", "Malaysia", "Mongolia", "Bangladesh", "Cambodia",
             "the Philippines", "Iran", "Saudi Arabia"],
    "Africa": ["Egypt", "Kenya", "Nigeria", "Ghana", "Ethiopia", "Morocco", "Algeria",
               "Tunisia", "Uganda", "Zimbabwe", "Senegal", "Sudan", "Rwanda", "Somalia",
               "Tanzania", "Namibia"],
    "South America": ["Peru", "Argentina", "Brazil", "Chile", "Colombia", "Venezuela",
                      "Ecuador", "Uruguay", "Bolivia", "Paraguay"],
    "North America": ["Canada", "Mexico", "the United States", "Cuba", "Jamaica",
                      "Guatemala", "Honduras"],
    "Oceania": ["Australia", "New Zealand", "Fiji", "Samoa"],
}
OPPOSITES = {
    "hot": "cold", "big": "small", "up": "down", "fast": "slow", "happy": "sad",
    "light": "dark", "open": "closed", "early": "late", "full": "empty", "hard": "soft",
    "young": "old", "wet": "dry", "strong": "weak", "rich": "poor", "loud": "quiet",
    "high": "low", "near": "far", "thick": "thin", "clean": "dirty", "first": "last",
    "long": "short", "good": "bad", "true": "false", "in": "out", "left": "right",
    "above": "below", "before": "after", "inside": "outside", "top": "bottom",
    "front": "back", "always": "never", "sweet": "sour", "cheap": "expensive",
    "easy": "difficult", "safe": "dangerous", "wide": "narrow", "deep": "shallow",
    "smooth": "rough", "alive": "dead", "awake": "asleep", "north": "south",
    "east": "west", "black": "white", "ancient": "modern", "polite": "rude",
    "generous": "selfish", "maximum": "minimum", "upstairs": "downstairs",
    "push": "pull", "win": "lose", "buy": "sell", "give": "take", "come": "go",
    "love": "hate", "laugh": "cry", "remember": "forget", "arrive": "leave",
    "accept": "refuse", "increase": "decrease", "friend": "enemy", "war": "peace",
    "question": "answer", "entrance": "exit", "victory": "defeat", "morning": "evening",
    "summer": "winter", "king": "queen", "boy": "girl", "inhale": "exhale",
    "import": "export", "success": "failure", "brave": "cowardly", "heavy": "light",
}
PLURALS = {
    "cat": "cats", "dog": "dogs", "book": "books", "tree": "trees", "car": "cars",
    "house": "houses", "apple": "apples", "horse": "horses", "bird": "birds",
    "chair": "chairs", "table": "tables", "window": "windows", "box": "boxes",
    "bus": "buses", "dish": "dishes", "watch": "watches", "fox": "foxes",
    "glass": "glasses", "class": "classes", "kiss": "kisses", "church": "churches",
    "brush": "brushes", "baby": "babies", "city": "cities", "story": "stories",
    "lady": "ladies", "party": "parties", "country": "countries", "family": "families",
    "key": "keys", "day": "days", "toy": "toys", "boy": "boys", "leaf": "leaves",
    "knife": "knives", "wife": "wives", "wolf": "wolves", "half": "halves",
    "loaf": "loaves", "shelf": "shelves", "child": "children", "man": "men",
    "woman": "women", "mouse": "mice", "goose": "geese", "foot": "feet", "tooth": "teeth",
    "person": "people", "ox": "oxen", "sheep": "sheep", "fish": "fish", "deer": "deer",
    "potato": "potatoes", "tomato": "tomatoes", "hero": "heroes", "cactus": "cacti",
    "fungus": "fungi", "crisis": "crises", "criterion": "criteria",
    "phenomenon": "phenomena", "photo": "photos", "piano": "pianos", "roof": "roofs",
    "chief": "chiefs", "cliff": "cliffs", "life": "lives", "calf": "calves",
}
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                "nine", "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen",
                "sixteen", "seventeen", "eighteen", "nineteen", "twenty"]
TENS = {20: "twenty", 30: "thirty", 40: "forty", 50: "fifty", 60: "sixty", 70: "seventy",
        80: "eighty", 90: "ninety"}
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December"]
USES = {  # what you use to ...: everyday physical sense
    "cut paper": "scissors", "brush your teeth": "a toothbrush", "dig a hole": "a shovel",
    "open a locked door": "a key", "tell the time": "a clock", "hammer in a nail": "a hammer",
    "sweep the floor": "a broom", "dry yourself after a bath": "a towel",
    "eat soup": "a spoon", "boil water": "a kettle", "take a photo": "a camera",
    "call a friend": "a phone", "keep food cold": "a fridge", "bake bread": "an oven",
    "wash your hands": "soap", "write a letter": "a pen", "carry water": "a bucket",
    "stay dry in the rain": "an umbrella", "cross a lake": "a boat",
    "climb onto a roof": "a ladder", "measure a line": "a ruler",
    "sew on a button": "a needle", "look at the stars": "a telescope",
    "see tiny germs": "a microscope", "keep your feet warm": "socks",
    "protect your head on a bike": "a helmet", "find your way in a new city": "a map",
    "light a candle": "a match", "row a boat": "an oar", "catch a fish": "a fishing rod",
    "drink tea": "a cup", "smooth the creases out of a shirt": "an iron",
    "see your own face": "a mirror", "turn a screw": "a screwdriver",
    "hit a tennis ball": "a racket", "type on a computer": "a keyboard",
    "rub out a pencil mark": "an eraser", "stick two pieces of paper together": "glue",
    "carry books to school": "a backpack", "protect your eyes from the sun": "sunglasses",
    "blow your nose": "a tissue", "fry an egg": "a frying pan", "open a tin of beans":
    "a tin opener", "cut a log": "a saw", "listen to music on the bus": "headphones",
    "keep your hands warm": "gloves", "take your temperature": "a thermometer",
    "weigh flour": "scales", "sharpen a pencil": "a pencil sharpener",
    "paint a picture": "a paintbrush", "unlock a car": "a car key",
    "water the plants": "a watering can", "wake up on time": "an alarm clock",
    "cut the grass": "a lawnmower", "comb your hair": "a comb", "mop up a spill": "a mop",
    "hang up a coat": "a hook", "post a letter": "a stamp", "switch channels on the TV":
    "a remote control", "see in the dark": "a torch", "send an email": "a computer",
    "fix a flat tyre": "a pump", "brush a dog's fur": "a brush", "serve the dinner":
    "a plate", "pour the tea": "a teapot", "tie a parcel": "string",
}
ANIMAL_FACTS = [
    # (question, answer, table of the distractors)
    *[(f"Which animal says {sound}?", animal, "animal") for animal, sound in [
        ("cow", "moo"), ("duck", "quack"), ("cat", "meow"), ("sheep", "baa"), ("pig", "oink"),
        ("dog", "woof"), ("owl", "hoot"), ("snake", "hiss"), ("bee", "buzz"),
        ("frog", "croak"), ("lion", "roar"), ("horse", "neigh"), ("mouse", "squeak"),
        ("donkey", "hee-haw")]],
    *[(f"What is a baby {animal} called?", young, "young") for animal, young in [
        ("cat", "kitten"), ("dog", "puppy"), ("cow", "calf"), ("sheep", "lamb"),
        ("horse", "foal"), ("pig", "piglet"), ("duck", "duckling"), ("goose", "gosling"),
        ("frog", "tadpole"), ("bear", "cub"), ("kangaroo", "joey"), ("goat", "kid"),
        ("deer", "fawn"), ("swan", "cygnet"), ("hen", "chick"), ("butterfly", "caterpillar"),
        ("owl", "owlet")]],
    *[(f"Where does a {animal} live?", home, "home") for animal, home in [
        ("bee", "hive"), ("bird", "nest"), ("spider", "web"), ("fox", "den"),
        ("rabbit", "burrow"), ("horse", "stable"), ("pig", "sty"), ("dog", "kennel"),
        ("fish", "water"), ("beaver", "lodge")]],
    *[(f"Which animal {clue}?", animal, "animal") for clue, animal in [
        ("has a long trunk", "elephant"), ("has a very long neck", "giraffe"),
        ("has black and white stripes", "zebra"), ("has a hump on its back", "camel"),
        ("carries its baby in a pouch", "kangaroo"), ("eats bamboo", "panda"),
        ("has eight arms", "octopus"), ("spins a web", "spider"), ("makes honey", "bee"),
        ("gives us wool", "sheep"), ("gives us milk", "cow"), ("lays the eggs we eat", "hen"),
        ("cannot fly and lives on the ice", "penguin"),
        ("sleeps upside down in caves", "bat"), ("has orange fur with black stripes", "tiger"),
        ("is the largest animal in the sea", "whale"), ("has a shell and moves slowly",
                                                        "tortoise"),
        ("hops and has long ears", "rabbit"), ("has a mane and is called king of the jungle",
                                               "lion"),
        ("swings through trees and eats bananas", "monkey"), ("barks", "dog")]],
]
QUANTITY_FACTS = [
    *[(f"How many {small} are in {big}?", n, "number") for small, big, n in [
        ("minutes", "an hour", "sixty"), ("seconds", "a minute", "sixty"),
        ("hours", "a day", "twenty-four"), ("days", "a week", "seven"),
        ("months", "a year", "twelve"), ("weeks", "a year", "fifty-two"),
        ("days", "a year", "three hundred and sixty-five"), ("years", "a decade", "ten"),
        ("years", "a century", "one hundred"), ("centimetres", "a metre", "one hundred"),
        ("metres", "a kilometre", "one thousand"), ("grams", "a kilogram", "one thousand"),
        ("eggs", "a dozen", "twelve"), ("days", "a fortnight", "fourteen"),
        ("millimetres", "a centimetre", "ten")]],
    *[(f"How many {part} does {thing} have?", n, "number") for part, thing, n in [
        ("legs", "a spider", "eight"), ("legs", "an insect", "six"), ("legs", "a dog", "four"),
        ("legs", "a bird", "two"), ("wheels", "a bicycle", "two"),
        ("wheels", "a tricycle", "three"), ("wheels", "a car", "four"),
        ("sides", "a triangle", "three"), ("sides", "a square", "four"),
        ("sides", "a pentagon", "five"), ("sides", "a hexagon", "six"),
        ("sides", "an octagon", "eight"), ("fingers", "a hand", "five"),
        ("eyes", "a person", "two")]],
    *[(f"What colour is {thing}?", colour, "colour") for thing, colour in [
        ("a banana", "yellow"), ("grass", "green"), ("the sky on a sunny day", "blue"),
        ("snow", "white"), ("coal", "black"), ("blood", "red"), ("a ripe tomato", "red"),
        ("a carrot", "orange"), ("a lemon", "yellow"), ("a strawberry", "red"),
        ("milk", "white"), ("chocolate", "brown"), ("a pumpkin", "orange"),
        ("a lime", "green"), ("a plum", "purple"), ("a cloud on a fine day", "white"),
        ("a crow", "black"), ("a flamingo", "pink"), ("a frog", "green"),
        ("a polar bear", "white"), ("lettuce", "green"), ("a tree trunk", "brown"),
        ("a fire engine", "red"), ("the night sky", "black"), ("mud", "brown"),
        ("broccoli", "green"), ("salt", "white"), ("a blueberry", "blue"),
        ("an aubergine", "purple"), ("the sea on a sunny day", "blue"),
        ("a cucumber", "green"), ("an orange", "orange"), ("a swan", "white")]],
]
STORY_NAMES = ["Hugo", "Mabel", "Otis", "Ivy", "Rufus", "Hazel", "Toby", "Clara", "Ned",
               "Pearl"]
STORY_ANIMALS = ["hamster", "parrot", "turtle", "pony", "hedgehog", "kitten", "puppy",
                 "squirrel"]
STORY_PLACES = ["in the kitchen", "in the barn", "on the beach", "in the library",
                "in the forest", "by the river", "in the attic", "in the meadow"]
STORY_TIMES = ["at dawn", "after dinner", "before school", "in the rain"]


def item(question: str, answer: str, wrong: list[str], rng: random.Random) -> dict:
    """One lm-eval-style item: the answer and the wrong choices in a seeded order."""
    choices = [answer, *wrong]
    rng.shuffle(choices)
    return {"context": f"Question: {question}\nAnswer:", "choices": choices,
            "answer": choices.index(answer)}


def from_table(rows: list[tuple[str, str]], seed: int, n_wrong: int = 3,
               pools: dict[str, list[str]] | None = None,
               kinds: list[str] | None = None) -> list[dict]:
    """Items from (question, answer) rows; distractors are other answers of the table (or
    of the row's pool in `pools`, when `kinds` names one per row)."""
    rng = random.Random(seed)
    out = []
    for i, (question, answer) in enumerate(rows):
        pool = pools[kinds[i]] if pools and kinds else [a for _, a in rows]
        others = sorted({a for a in pool if a != answer})
        out.append(item(question, answer, rng.sample(others, min(n_wrong, len(others))), rng))
    return out


def capitals() -> list[dict]:
    return from_table([(f"What is the capital of {c}?", a) for c, a in CAPITALS.items()], 11)


def continents() -> list[dict]:
    rows = [(f"Which continent is {c} in?", cont)
            for cont, countries in CONTINENTS.items() for c in countries]
    return from_table(rows, 12)


def opposites() -> list[dict]:
    return from_table([(f"What is the opposite of {w}?", a) for w, a in OPPOSITES.items()], 13)


def plural_forms(word: str) -> list[str]:
    """Plausible wrong plurals made by rule (the right one is removed by the caller)."""
    forms = {word + "s", word + "es", word + "en", word + "ses"}
    if word.endswith("y"):
        forms |= {word[:-1] + "ies", word + "s"}
    if word.endswith("f"):
        forms.add(word[:-1] + "ves")
    if word.endswith("fe"):
        forms.add(word[:-2] + "ves")
    if word.endswith("us"):
        forms.add(word[:-2] + "i")
    return sorted(forms)


def plurals() -> list[dict]:
    rng = random.Random(14)
    out = []
    for word, plural in PLURALS.items():
        wrong = [f for f in plural_forms(word) if f != plural]
        out.append(item(f"What is the plural of {word}?", plural,
                        rng.sample(wrong, min(3, len(wrong))), rng))
    return out


def number_word(n: int) -> str:
    if n <= 20:
        return NUMBER_WORDS[n]
    tens, ones = divmod(n, 10)
    return TENS[10 * tens] + (f"-{NUMBER_WORDS[ones]}" if ones else "")


def numbers() -> list[dict]:
    words = [number_word(n) for n in range(0, 41)]
    rows = [(f"What number comes after {words[n]}?", words[n + 1]) for n in range(0, 30)]
    rows += [(f"What number comes before {words[n]}?", words[n - 1]) for n in range(2, 31)]
    rows += [(f"How is the number {n} written in words?", number_word(n))
             for n in (*range(11, 20), *range(21, 100, 7))]
    return from_table(rows, 15, pools={"w": words + [number_word(n) for n in range(41, 100)]},
                      kinds=["w"] * len(rows))


def order() -> list[dict]:
    rows, kinds = [], []
    letters = [chr(c) for c in range(ord("A"), ord("Z") + 1)]
    for name, seq, cyclic in (("day", DAYS, True), ("month", MONTHS, True),
                              ("letter", letters, False)):
        n = len(seq)
        for i, x in enumerate(seq):
            if cyclic or i + 1 < n:
                rows.append((f"Which {name} comes after {x}?", seq[(i + 1) % n]))
                kinds.append(name)
            if cyclic or i > 0:
                rows.append((f"Which {name} comes before {x}?", seq[(i - 1) % n]))
                kinds.append(name)
    return from_table(rows, 16, pools={"day": DAYS, "month": MONTHS, "letter": letters},
                      kinds=kinds)


def uses() -> list[dict]:
    return from_table([(f"What do you use to {x}?", a) for x, a in USES.items()], 17)


def _pooled(facts: list[tuple[str, str, str]], seed: int) -> list[dict]:
    pools: dict[str, list[str]] = {}
    for _, answer, kind in facts:
        pools.setdefault(kind, []).append(answer)
    return from_table([(q, a) for q, a, _ in facts], seed, pools=pools,
                      kinds=[k for _, _, k in facts])


def animals() -> list[dict]:
    return _pooled(ANIMAL_FACTS, 18)


def quantities() -> list[dict]:
    return _pooled(QUANTITY_FACTS, 19)


def story() -> list[dict]:
    rng = random.Random(20)
    combos = list(itertools.product(STORY_NAMES, STORY_ANIMALS, STORY_PLACES, STORY_TIMES))
    out = []
    for i, (name, animal, place, time) in enumerate(rng.sample(combos, 150)):
        text = f"{name} the {animal} slept {place} {time}."
        question, answer, pool = [
            (f"What is the name of the {animal}?", name, STORY_NAMES),
            (f"What kind of animal is {name}?", animal, STORY_ANIMALS),
            (f"Where did {name} sleep?", place, STORY_PLACES),
        ][i % 3]
        wrong = rng.sample([x for x in pool if x != answer], 3)
        out.append(item(f"{text} {question}", answer, wrong, rng))
    return out


SKILLS = {
    "capitals": capitals, "continents": continents, "opposites": opposites,
    "plurals": plurals, "numbers": numbers, "order": order, "uses": uses,
    "animals": animals, "quantities": quantities, "story": story,
}
