"""Files: what an image reads from the disk, read once and staged while hashed."""
