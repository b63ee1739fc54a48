// First touch of fresh anonymous memory, timed per 2 MiB: maps GIB GiB, writes one byte per
// 4 KiB page, unmaps, ROUNDS times; prints GB/s and the 2 MiB chunks' p50 / p99 / max. On a VM
// whose host takes back free guest memory (balloon free page reporting), the first round pays
// the host's faults (docs/benchmarks.md, 2026-12-02 (day)).
//   gcc -O2 -o /tmp/first-touch scripts/first-touch.c && /tmp/first-touch [GIB [ROUNDS]]
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec/1e9;}
static int cmp(const void*a,const void*b){double x=*(double*)a,y=*(double*)b;return x<y?-1:x>y;}
int main(int c,char**v){
  size_t gib=c>1?atol(v[1]):2, rounds=c>2?atol(v[2]):2, len=gib<<30, chunk=2<<20, n=len/chunk;
  double *t=malloc(n*sizeof(double));
  for(size_t r=0;r<rounds;r++){
    char*p=mmap(0,len,PROT_READ|PROT_WRITE,MAP_PRIVATE|MAP_ANONYMOUS,-1,0);
    double t0=now();
    for(size_t i=0;i<n;i++){double a=now();for(size_t o=0;o<chunk;o+=4096)p[i*chunk+o]=1;t[i]=now()-a;}
    double tot=now()-t0; int over1=0,over5=0;
    for(size_t i=0;i<n;i++){over1+=t[i]>1e-3;over5+=t[i]>5e-3;}
    qsort(t,n,sizeof(double),cmp);
    printf("round %zu: %.2f GB/s; 2 MiB chunk p50 %.0f us p99 %.0f us max %.1f ms; >1 ms: %d, >5 ms: %d\n",r,len/tot/1e9,t[n/2]*1e6,t[n*99/100]*1e6,t[n-1]*1e3,over1,over5);
    munmap(p,len);
  }
}
