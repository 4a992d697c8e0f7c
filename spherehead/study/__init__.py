"""The study: representations trained side by side on the same data (SphereHead's Table 2,
measured). ``arms`` names what each arm changes, ``runner`` trains the arms (resumable, several
at once), ``report`` measures them and writes the table, the JSON and the figure.
"""
