"""imgprof.pp"""

__all__: list[str] = []
