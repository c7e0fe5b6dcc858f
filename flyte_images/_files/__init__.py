"""Files: what an image reads from the disk, read once and staged while hashed.

ignore      .dockerignore rules, matched as Docker matches them
tree        walks of copied folders (entries, modes, digests)
statcache   digests remembered by stat key; the cache folder and its safe reads
treememo    whole walks remembered while no stat key changed
sources     what a layer reads: files, trees, the ignore file that applies
staging     the staged context folder the identifier is computed from
uvbin       the pinned uv binary, fetched once into the cache
"""
