"""The plumbing every stage uses: params validation (`config`), atomic outputs and
run_info.json (`artifacts`), MLflow tracking (`tracking`), the stage entry point (`cli`).

May import: nothing else in forgetful.
"""
