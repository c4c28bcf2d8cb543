"""imgprof.pl"""

__all__: list[str] = []
