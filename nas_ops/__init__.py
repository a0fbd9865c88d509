"""medseg-nas: neural architecture search for medical image segmentation."""
