"""How a photo becomes an answer: the model side of the app, with no web framework and no database.

Read in this order:

* :mod:`.artifact`   - the artifact folder format (files, ``metadata.json`` with label ``groups``) and its reader;
* :mod:`.imaging`    - uploaded bytes -> a checked RGB image -> model-sized pixels (:mod:`.avif`: the
  frame size an AVIF really codes);
* :mod:`.runtimes`   - LiteRT / Keras: pixels -> probabilities (and the last feature map);
* :mod:`.batching`   - optional micro-batching of concurrent calls into one invocation;
* :mod:`.classifier` - a loaded artifact: photo -> top classes, group scores;
* :mod:`.gate`       - the "is this a car at all?" gate and the verdict;
* :mod:`.answers`    - the most specific level the model can stand behind (class, make, segment);
* :mod:`.explain`    - "why this answer?": class activation maps with NumPy;
* :mod:`.gallery`    - labels taught by example: embeddings, the nearest taught label, its threshold;
* :mod:`.pipeline`   - the steps in their one order: decode -> thumbnail and vehicle check -> classify ->
  verdict -> answer, the model's or a taught label's (:func:`.pipeline.answer_photo`);
* :mod:`.errors`     - what cannot be answered, as a code and a message (no HTTP status).

Everything here takes plain inputs and returns plain results; ``app/services.py`` and the blueprints
put them behind HTTP and into the database, ``flask classify`` and the benchmarks call the same
pipeline. The import-linter contracts in ``.importlinter`` keep this package free of web, database and
training code.
"""
