"""imgprof.im"""

__all__: list[str] = []
