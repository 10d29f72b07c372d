/* MKL asks this function whether the CPU is an Intel one before it picks its code: on any
 * other CPU it runs generic code whatever instructions the CPU has. Preloaded into a process
 * (LD_PRELOAD), this definition answers yes, and MKL picks its code by the instructions the
 * CPU reports (cpuid), as it does on an Intel CPU. See hummuss/mkl_vendor.py. */
int mkl_serv_intel_cpu_true(void) { return 1; }
