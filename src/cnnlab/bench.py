def main(args):
    raise SystemExit("not yet")
