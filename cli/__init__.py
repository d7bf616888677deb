"""Command-line glue of `evaluate.py`, one module per subcommand: flags become the typed settings
the library takes (evaluation/ holds no argparse). run_args.py has the flags several share."""
