"""imgprof.mm"""

__all__: list[str] = []
