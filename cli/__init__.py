"""The ``phm`` command line: the top floor, above flows/, models/, features/ and phm/."""
