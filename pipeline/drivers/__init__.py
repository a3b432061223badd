"""The drivers: bisect, repro, matrix and LAVA, each above the chain.

A driver runs the chain (`pipeline.chain.run`, nested, in a build dir of
its own) and reads its records; nothing below imports a driver.  Their doit
tasks are declared in `pipeline.drivers.tasks`, on top of the stage tasks.
"""
