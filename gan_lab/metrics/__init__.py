"""Sample-quality metrics: FID/KID features, toy mode metrics, the paper's theory."""
