#include <stdio.h>
int main(void) { puts("pending"); return 1; }
