"""The digits example's wrapper package: a handwritten-digit classifier served with numpy and Pillow only."""
