"""Names that the command line shares with the modules behind it, here, where nothing heavy is imported, so that
``python -m vae`` reads and refuses its arguments before torch loads."""

DATA_ENV = "VAE_DATA_DIR"  # the environment variable that names the data folder
INPUTS = ("test", "bernoulli", "fantasies")  # what ``diagnose`` shows q(z|x) on
