"""A study in one command: each method's search, its found network against the baselines and random architectures
of its space, retrained over seeds and scored on held-out test cases, with the statistics (see nas_ops.study.run).

python scripts/study.py --dataset_dir demo_data/Task901_DemoNuclei --output_dir runs/study_nuclei \
    --methods "[bixnas]" --random 8 --seeds 3 --budget demo

The same command after `pip install` is `medseg-nas-study`.
"""

from nas_ops.study.run import main

if __name__ == "__main__":
    main()
