"""The word lists the triage rules are built from, as regular-expression alternations.

They are written against :func:`medlora.answers.triage.text.normalise`'s output: lower case,
no apostrophes, contractions spelled out ("cannot", "will not", "is not"), texting spelled out.
Each name is a phrase class, e.g. :data:`UNRESPONSIVE` is every way of saying that someone cannot
be woken; :mod:`.rules` combines them into situations.
"""

from __future__ import annotations


def alt(*words: str) -> str:
    """``(?:a|b|c)`` of the phrases given (each may itself be a regular expression)."""
    return "(?:" + "|".join(words) + ")"


GAP = r"(?:\w+ ){0,6}"  # up to six words in between
NOT = alt("not", "cannot", "can not", "could not", "will not", "is not", "does not", "did not", "never", "no")
KIN = alt("husband", "wife", "partner", "mom", "mother", "dad", "father", "son", "daughter", "brother", "sister",
          "friend", "boyfriend", "girlfriend", "grandma", "grandmother", "grandpa", "grandfather", "grandad",
          "uncle", "aunt", "cousin", "roommate", "flatmate", "neighbour", "neighbor", "coworker", "colleague",
          "boss", "man", "woman", "guy", "girl", "boy", "patient", "student", "mate", "niece", "nephew", "kid")
CHILD = alt("baby", "babies", "infant", "newborn", "toddler", "child", "kid", "kids",
            r"little (?:brother|sister|girl|boy|one)",
            r"(?:\d+|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve) (?:year|month|week|yr) old",
            "son", "daughter", "grandson", "granddaughter", "niece", "nephew", "boy", "girl")
MEDS = alt("pills?", "tablets?", "capsules?", "medicine", "medications?", "drugs?", "tylenol", "acetaminophen",
           "paracetamol", "ibuprofen", "advil", "aspirin", "benadryl", "xanax", "valium", "ambien", "oxycodone",
           "percocet", "vicodin", "tramadol", "codeine", "morphine", "methadone", "insulin", "antidepressants?",
           "painkillers?", "opioids?", "lithium", "digoxin", "gummies", "vitamins", "heroin", "fentanyl",
           "cough syrup", "edibles", "molly", "ecstasy", "cocaine")
POISONS = alt("bleach", "poison", "weedkiller", "chlorine", "ammonia", "dish soap", "liquid laundry", "antifreeze",
              "detergent", "pods?", r"batter(?:y|ies)", "magnets?", "cleaners?", r"cleaning \w+", "weed killer",
              "pesticide", "lamp oil", "paint thinner", "petrol", "gasoline", "vape liquid", "e liquid", "nicotine",
              "mushrooms?", "rat poison", r"dishwasher \w+", "fentanyl patch", "lighter fluid", "hand sanitizer",
              "sanitizer", "nail polish remover", "silica gel", r"berr(?:y|ies)", r"lea(?:f|ves)", "oleander",
              "foxglove", "window cleaner", "drain cleaner", "oven cleaner", "chemicals?", r"laundry \w+",
              "mouthwash", "perfume", "essential oil", "something laced")
INGESTED = alt("swallowed", "drank", "drunk", "ate", "eaten", "chewed", "licked", "bit into", "got into", "inhaled",
               "sniffed", "sprayed", "splashed", "injected", "snorted", "smoked",
               r"put (?:\w+ ){0,3}in (?:his|her|their) mouth", r"found (?:\w+ ){0,3}and (?:ate|drank|swallowed)")
TOO_MUCH = alt("too many", "too much", "to many", "way too", r"whole (?:bottle|pack|box|strip|packet|sheet)",
               "a bottle of", r"all (?:of )?(?:my|his|her|the|their)", "a bunch of", "bunch of", "handful of",
               "a lot of", "half a bottle", r"\d{2,}", r"[4-9]", "fifteen", "twenty", "thirty", "forty", "fifty",
               "a pack of", "most of a", "double", "twice", "ten times", "extra")
UNRESPONSIVE = alt(r"(?:has )?no pulse", r"heart (?:has )?stopped", "doing cpr",
                   r"(?:dropped|fell) to the (?:floor|ground)", "went down and", "keeled over", "out cold",
                   r"(?:will not|cannot|wont|not) open (?:his|her|their|my) eyes", r"slumped (?:over|to one side)",
                   "one seizure after another", "unresponsive", "unresponsiv", "not responding", "not responsive",
                   "not respond", "will not wake", "cannot wake", "not waking", "not wake", "hard to wake",
                   "hardly waking", "barely awake", "barely conscious", "will not come round", "not coming round",
                   "unconscious", "passed out", "collapsed", "not moving", "not move", "limp", "floppy", "flopy",
                   "lethargic", "nodding off", "not crying", "cannot stand")
BREATHING = alt(r"struggling for (?:every |each )?breath",
                r"(?:only|barely) (?:say|speak|talk) (?:one|a few) words?",
                r"inhaler (?:\w+ ){0,3}(?:empty|not working|not helping|is not helping|does nothing)",
                "chest is locking", r"(?:lips|face) (?:\w+ ){0,3}(?:purple|blue)",
                r"(?:keeps|keep|is) stopping breathing", r"stuck in (?:his|her|my|their) throat",
                r"gagging (?:\w+ ){0,6}(?:cannot|not) (?:make|making) (?:any )?(?:sound|noise)", "cannot cough",
                rf"{NOT} (?:breathe|breath|breathing|breating)\b(?! (?:through|out of|in through) (?:it|(?:my|the|"
                rf"his|her) nose))",
                "not breath good", "stopped breathing", "barely breathing", "struggling to breathe",
                "struggling to breath", "hard time breathing", "trouble breathing",
                r"(?:hardly|barely) (?:breathe|breath)", "gasping", rf"{NOT} get (?:enough )?air",
                r"cannot catch (?:my|his|her|their) breath",
                r"breathing (?:is |got )?(?:really |very |so )?(?:fast|strange|strangely|weird|funny|noisy|slow|"
                r"slowly)",
                "cannot finish a sentence", "cannot talk in full sentences", "wheezing so",
                r"(?:so|very|really|extremely|severely) short of breath",
                r"short of breath (?:and|at rest|lying down|cannot)", "grunting with every breath",
                r"(?:chest|ribs) (?:is |are )?sucking in", "pulling in under", "nostrils flaring", "more breathless",
                "hurts to breathe")
COLOUR = alt("turning blue", r"(?:lips|face|skin) (?:\w+ ){0,2}dusky",
             r"cold (?:\w+ ){0,2}pale (?:\w+ ){0,3}(?:barely|not) moving",
             r"(?:lips|face|skin) (?:\w+ ){0,2}(?:blue|grey|gray|purple)", "is blue", "blue color", "going blue",
             "mottled", "bluish", "blueish", r"(?:is|looks|very|going) (?:grey|gray|pale and)\b(?! platelet)")
SEIZURE = alt(r"went stiff (?:\w+ ){0,4}eyes",
              r"(?:fitting|seizing) (?:\w+ ){0,2}(?:and|with) (?:blue|not breathing)",
              r"having a (?:seizure|siezure|fit)", r"(?:is|keeps|started|been) fitting", "convulsing", "seizing",
              "shaking all over", "eyes rolled back", "twitching and jerking", "jerking", "foaming at the mouth",
              "little seizures", "had a seizure")
BLEEDING = alt(r"(?:severe|heavy|heavily|massive|uncontrolled|lots of) bleeding", "blood everywhere",
               r"cut (?:\w+ ){0,3}(?:badly|deep|deeply|to the bone)",
               r"bleeding (?:\w+ ){0,3}(?:will not stop|heavily|a lot|badly|everywhere|nonstop|non stop)",
               r"blood (?:is )?(?:spurting|pouring|gushing)", "so much blood",
               r"soaking (?:\w+ ){0,2}(?:pads|through)",
               r"(?:vomiting|vomited|throwing up|coughing up|coughed up|threw up|coughing) (?:\w+ ){0,3}blood",
               "coffee grounds", r"blood (?:\w+ ){0,8}(?:not stop|will not stop)", "keeps bleeding",
               "bleeding a lot", "is bleeding")
NEURO = alt(r"words (?:\w+ ){0,2}(?:jumbled|muddled|wrong|strange|slurred)",
            r"(?:speak|speaks|speaking|talk|talks|talking) (?:strange|strangely|funny|wrong|nonsense)",
            r"cannot (?:lift|raise) (?:his|her|my|their|one) (?:\w+ )?arm",
            r"(?:mouth|face) (?:\w+ ){0,2}(?:go|goes|went|gone) to one side",
            r"(?:keeps|keep) asking the same (?:question|thing)",
            r"sudden (?:loss of balance|blindness|vision loss|confusion)",
            r"(?:face|mouth) (?:\w+ ){0,2}(?:drooping|droopy|crooked|weird and droopy)",
            r"(?:face|mouth|smile) (?:\w+ ){0,3}(?:dropped|drooped|fallen|droops)",
            r"(?:dropped|drooping|droopy) on one side", r"slurr(?:ed|ing)",
            rf"{NOT} (?:move|lift|feel) (?:my|his|her|their|the) (?:\w+ )?(?:arm|legs?|side)",
            r"(?:one|left|right) side (?:\w+ ){0,4}(?:numb|weak|down|not moving|floppy)", r"half (?:\w+ ){0,2}face",
            r"suddenly (?:\w+ ){0,3}(?:confused|cannot speak|cannot walk|cannot move|cannot feel|numb|lost|weak)",
            r"cannot find (?:his|her|my|their) words", "words are coming out wrong", "talking nonsense",
            "not making sense", rf"{NOT} recogni[sz]e", r"lost (?:the )?vision", "vision just went", "went black",
            "cannot answer us", "cannot talk good", "cannot speak properly", r"one arm is (?:weak|heavy)",
            "arm is heavy", "stopped mid sentence", r"cannot control (?:my |his |her )?bladder")
CARDIAC = alt(r"chest (?:\w+ ){0,3}(?:radiating|spreading|going) (?:\w+ ){0,3}(?:back|jaw|arm|neck)",
              r"pain in chest (?:\w+ ){0,3}(?:strong|bad|severe)",
              r"chest (?:\w+ ){0,4}(?:feel like i am dying|feel like dying)",
              r"(?:heavy|crushing|tight|squeezing) (?:pressure|pain|feeling) (?:\w+ ){0,5}chest",
              r"chest (?:and|&) (?:jaw|arm|back) (?:\w+ )?(?:hurt|hurts|pain)",
              r"(?:tearing|ripping) (?:\w+ ){0,3}(?:pain|feeling)",
              r"(?:crushing|severe|sudden|bad|terrible|strong|very|sharp|tearing|ripping) (?:\w+ ){0,3}(?:chest|"
              r"shoulder blades)",
              r"pressure in (?:my|his|her) chest",
              r"chest (?:\w+ ){0,5}(?:crushing|hurts so|tight rn|pressure and|pain and|elephant|is tight like|sweat)",
              r"clutching (?:his|her|my|their) chest", "heart attack i think",
              r"pain (?:\w+ ){0,2}(?:from|to) (?:the )?(?:chest|jaw)", r"jaw (?:\w+ ){0,3}arm",
              r"arm (?:\w+ ){0,3}jaw",
              r"heart (?:is )?(?:racing|pounding) (?:\w+ ){0,3}(?:\d{3}|super fast|chest|dizzy|pass out|faint)",
              r"chest pain (?:\w+ ){0,4}(?:sweating|sweaty|dizzy|faint|arm|jaw|help|short of breath|when i breathe)")
ALLERGY = alt(r"(?:face|lips|eyes|tongue) (?:\w+ ){0,3}(?:puffing up|puffed up|blowing up)",
              r"throat (?:\w+ ){0,2}(?:closing|tight|swelling)",
              r"(?:tongue|lips?|face) (?:\w+ ){0,2}(?:swelling|swollen|huge)",
              r"hives (?:\w+ ){0,6}(?:wheez|breath|throat|swallow|dizzy|hoarse)", "epipen not", "hard to swallow",
              "voice is getting hoarse", "voice has gone hoarse")
TRAUMA = alt(r"fell (?:\w+ ){0,3}(?:first|second|third|top) floor window",
             r"face down in (?:the )?(?:water|pool|bath|pond|paddling pool)", r"went under (?:at|in) the",
             r"(?:fall|fell) in the pool", r"burns (?:me|him|her) with", r"comes to school with (?:burns|bruises)",
             "cigarette burns", r"(?:been |got |was |is )?stabbed", r"(?:been|got|was|is) shot",
             r"hit by a (?:car|truck|bus)",
             r"fell (?:\w+ ){0,3}(?:roof|ladder|balcony|window|height|high|top|stairs|bunk|trampoline|swing|slide|"
             r"climbing|bed|table|cliff)",
             r"fell (?:\w+ ){0,2}(?:through the ice|in the (?:pool|bath|lake|river)|into the (?:pool|pond|lake|"
             r"river))",
             r"pulled (?:\w+ ){0,3}out of the (?:pool|lake|water|river|pond)", r"under (?:the )?water", "underwater",
             "electric shock",
             r"(?:burned|burnt|burns|scalded|scald) (?:\w+ ){0,6}(?:skin|blister|blistering|peeling|white|raw|"
             r"all over|whole|face|chest|coming off)",
             "blistering", "skin is coming off", "boiling", r"car (?:crash|accident)", "bent the wrong way",
             "fluid coming from", "lying on the road", r"(?:is|are|am|almost|nearly|just) drown(?:ing|ed)",
             r"locked in (?:a|the) car", "in the car in the heat", "house fire", "fire and")
OTHER_URGENT = alt(r"(?:purple|red|dark) (?:\w+ ){0,2}(?:blotches|spots|rash) (?:\w+ ){0,3}(?:not|do not|does not|"
                   r"dont) fade",
                   r"(?:terrible|severe|sudden|unbearable|excruciating|"
                   r"worst) (?:\w+ ){0,3}pain (?:\w+ ){0,6}(?:testicle|testicles|groin|balls)",
                   r"(?:testicle|testicles|groin) (?:\w+ ){0,8}(?:vomiting|throwing up|sick)",
                   r"(?:sudden )?(?:agony|excruciating pain)", r"pain (?:is )?(?:10|ten) out of (?:10|ten)",
                   r"pregnant (?:\w+ ){0,10}(?:sharp|stabbing|severe|terrible) pain",
                   r"(?:pregnant|pregnancy) (?:\w+ ){0,12}(?:faint|lightheaded|light headed|shoulder)",
                   r"(?:fruity|sweet) (?:smelling )?breath",
                   r"sugar (?:\w+ ){0,3}(?:is )?(?:hi|high|lo)\b (?:\w+ ){0,3}(?:meter|monitor)",
                   r"sugar (?:is )?(?:[4-9]\d\d|[1-2]\d)\b",
                   r"(?:bone|bones) (?:\w+ ){0,3}(?:sticking out|through the skin)",
                   r"bleeding (?:\w+ ){0,3}after giving birth", r"(?:pumping|spurting) out",
                   r"(?:vomited|vomiting|throwing up|threw up) (?:\w+ ){0,3}(?:blood|nonstop|"
                   r"non stop) (?:\w+ ){0,8}(?:faint|dizzy|drowsy|pale|confused)",
                   r"(?:pooing|pooping|passing) blood (?:\w+ ){0,6}(?:dizzy|faint|pale)",
                   r"hit (?:my|his|her|their) head (?:\w+ ){0,10}(?:confused|sleepy|drowsy|vomiting|throwing up|"
                   r"blood thinners?|not making sense|unconscious|cannot remember)",
                   r"(?:confused|sleepy|drowsy) (?:\w+ ){0,6}(?:hit (?:my|his|her|their) head|head injury)",
                   r"(?:black|tarry) (?:\w+ ){0,8}(?:pass out|faint|fainted|dizzy)", r"(?:pooping|pooing) black",
                   r"(?:sun|heat) (?:\w+ ){0,8}(?:confused|not making sense|stopped sweating)",
                   r"(?:hot and dry|not sweating)",
                   r"(?:legs|leg) (?:\w+ ){0,3}numb (?:\w+ ){0,4}(?:cannot|can not) (?:pee|urinate)",
                   r"diabetic (?:\w+ ){0,4}(?:confused|sweaty|shaking|not making sense|unconscious|drowsy)",
                   r"(?:fumes|closed room|gas leak|smell gas) (?:\w+ ){0,8}(?:dizzy|confused|headache|sick)",
                   r"worst (?:\w+ )?headache", r"(?:explosive|thunderclap|sudden severe) headache", "stiff neck",
                   r"rash (?:\w+ ){0,3}(?:not fade|does not fade|not go away|does not go away)",
                   r"sugar (?:is )?(?:[1-4]\d)\b",
                   r"pregnant (?:\w+ ){0,8}(?:bleeding|blood|not moved|headache|blurry)",
                   r"(?:baby|it) is coming now",
                   r"(?:stomach|belly) (?:\w+ ){0,2}(?:rock hard|hard as a board|rigid)",
                   r"black (?:tarry )?(?:stool|poop)", r"(?:freezing|hot) (?:\w+ ){0,3}confused", "stopped sweating",
                   "sunken soft spot", r"no (?:wet diaper|tears)", rf"{NOT} (?:peed|drunk anything|had a wet)",
                   "seeing yellow", "ears are ringing", "overheating",
                   r"fever (?:\w+ ){0,4}(?:floppy|limp|hard to wake|not move|stiff neck|not feed|will not feed)")
