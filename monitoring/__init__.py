"""Live scoring on the stream: Production and its challengers judged minute by minute as the truth comes."""
