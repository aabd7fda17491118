"""continual: a research codebase for continual learning that learns like a child.

Rooms (sub-packages):
    stream   -- the embedded attribute world and streams of novel categories
    learner  -- backbones and the learner that trains on a stream
    heads    -- class, attribute and compatibility heads
    memory   -- bounded replay memory
    metrics  -- evaluation and the report card
    logging  -- console, run folder and W&B
    results  -- run folders to tables, figures and scaling fits
"""

__version__ = "0.1.0"
