"""HTCondor back end (Condor-G through the htcondor Python bindings)."""
