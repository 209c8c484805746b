"""Reading SB3's files (model.zip, vecnormalize.pkl) without running code from them."""
