"""The model zoo: pack a trained run as a standalone MONAI bundle zip, index it, install it by checksum."""
