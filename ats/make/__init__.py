"""``ats-make``: writing data sets of images larger than memory, tile by tile
(:mod:`.pyramid`), e.g. Megapixel MNIST at gigapixel sizes (:mod:`.mega_mnist`)."""
